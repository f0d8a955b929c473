/* The kernel calls of repeatr.linux.libc, compiled: no ctypes in a run.
 *
 * `import ctypes` and declaring the calls through it cost every
 * `repeatr run` ~4-6 ms of CPU (the sandbox server and helper mount,
 * unshare, prctl... through repeatr.linux.libc); this module costs a
 * dlopen of a small .so. It is deliberately thin: each function makes
 * one call and returns its result, or -errno when it fails, and
 * repeatr.linux.libc raises the OSError naming the call and its arguments
 * (one place for the messages). Paths and strings arrive as bytes (the
 * caller encodes them with os.fsencode); NULs inside them raise ValueError.
 * The GIL is released around every call, as ctypes did (mount can block).
 *
 * seccomp_version asks libseccomp (dlopen) for its version: the key of
 * the compiled-program cache (repeatr.executors.seccomp), looked up on
 * every run; compiling a program on a cache miss still goes through ctypes
 * (repeatr.linux.libseccomp).
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <dlfcn.h>
#include <errno.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
/* SYS_mount_setattr and SYS_openat2: headers new enough for struct
 * mount_attr (linux/mount.h, 5.12) name both syscalls. */

/* "O&" converter: bytes without NULs -> const char *. */
static int path_arg(PyObject *obj, void *out) {
    if (!PyBytes_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "expected bytes, not %.100s", Py_TYPE(obj)->tp_name);
        return 0;
    }
    const char *s = PyBytes_AS_STRING(obj);
    if (strlen(s) != (size_t)PyBytes_GET_SIZE(obj)) {
        PyErr_SetString(PyExc_ValueError, "embedded null byte");
        return 0;
    }
    *(const char **)out = s;
    return 1;
}

/* "O&" converter: None -> NULL, else as path_arg. */
static int optional_path_arg(PyObject *obj, void *out) {
    if (obj == Py_None) {
        *(const char **)out = NULL;
        return 1;
    }
    return path_arg(obj, out);
}

/* Make `call` without the GIL; return its result, or -errno when it returned -1. */
#define RETURN_CALL(call)                                 \
    do {                                                  \
        long r_;                                          \
        int err_;                                         \
        Py_BEGIN_ALLOW_THREADS                            \
        r_ = (call);                                      \
        err_ = errno;                                     \
        Py_END_ALLOW_THREADS                              \
        return PyLong_FromLong(r_ == -1 ? -err_ : r_);    \
    } while (0)

static PyObject *py_unshare(PyObject *self, PyObject *args) {
    int flags;
    (void)self;
    if (!PyArg_ParseTuple(args, "i:unshare", &flags))
        return NULL;
    RETURN_CALL(unshare(flags));
}

static PyObject *py_setns(PyObject *self, PyObject *args) {
    int fd, nstype;
    (void)self;
    if (!PyArg_ParseTuple(args, "ii:setns", &fd, &nstype))
        return NULL;
    RETURN_CALL(setns(fd, nstype));
}

static PyObject *py_mount(PyObject *self, PyObject *args) {
    const char *source, *target, *fstype, *data;
    unsigned long flags;
    (void)self;
    if (!PyArg_ParseTuple(args, "O&O&O&kO&:mount", optional_path_arg, &source, path_arg, &target,
                          optional_path_arg, &fstype, &flags, optional_path_arg, &data))
        return NULL;
    RETURN_CALL(mount(source, target, fstype, flags, data));
}

static PyObject *py_umount2(PyObject *self, PyObject *args) {
    const char *target;
    int flags;
    (void)self;
    if (!PyArg_ParseTuple(args, "O&i:umount2", path_arg, &target, &flags))
        return NULL;
    RETURN_CALL(umount2(target, flags));
}

static PyObject *py_mount_setattr(PyObject *self, PyObject *args) {
    int dirfd;
    const char *path;
    unsigned int flags;
    unsigned long long attr_set, attr_clr;
    (void)self;
    if (!PyArg_ParseTuple(args, "iO&IKK:mount_setattr", &dirfd, path_arg, &path, &flags,
                          &attr_set, &attr_clr))
        return NULL;
    struct mount_attr attr = {.attr_set = attr_set, .attr_clr = attr_clr};
    RETURN_CALL(syscall(SYS_mount_setattr, dirfd, path, flags, &attr, sizeof attr));
}

static PyObject *py_openat2(PyObject *self, PyObject *args) {
    int dirfd;
    const char *path;
    unsigned long long flags, mode, resolve;
    (void)self;
    if (!PyArg_ParseTuple(args, "iO&KKK:openat2", &dirfd, path_arg, &path, &flags, &mode,
                          &resolve))
        return NULL;
    struct open_how how = {.flags = flags, .mode = mode, .resolve = resolve};
    RETURN_CALL(syscall(SYS_openat2, dirfd, path, &how, sizeof how));
}

static PyObject *py_prctl(PyObject *self, PyObject *args) {
    int option;
    unsigned long arg2, arg3, arg4, arg5;
    (void)self;
    if (!PyArg_ParseTuple(args, "ikkkk:prctl", &option, &arg2, &arg3, &arg4, &arg5))
        return NULL;
    RETURN_CALL(prctl(option, arg2, arg3, arg4, arg5));
}

static PyObject *py_sethostname(PyObject *self, PyObject *args) {
    const char *name;
    Py_ssize_t size;
    (void)self;
    if (!PyArg_ParseTuple(args, "y#:sethostname", &name, &size))
        return NULL;
    RETURN_CALL(sethostname(name, (size_t)size));
}

static PyObject *py_socket(PyObject *self, PyObject *args) {
    int domain, type, protocol;
    (void)self;
    if (!PyArg_ParseTuple(args, "iii:socket", &domain, &type, &protocol))
        return NULL;
    RETURN_CALL(socket(domain, type, protocol));
}

/* struct scmp_version, seccomp.h (libseccomp-dev 2.5). */
struct scmp_version {
    unsigned int major, minor, micro;
};

static PyObject *py_seccomp_version(PyObject *self, PyObject *noargs) {
    static void *lib;
    (void)self;
    (void)noargs;
    if (!lib)
        lib = dlopen("libseccomp.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *why = dlerror();
        return PyUnicode_DecodeFSDefault(why ? why : "dlopen failed");
    }
    const struct scmp_version *(*version)(void);
    *(void **)&version = dlsym(lib, "seccomp_version");
    if (!version)
        return PyUnicode_FromString("libseccomp.so.2: no symbol seccomp_version");
    const struct scmp_version *v = version();
    return Py_BuildValue("(III)", v->major, v->minor, v->micro);
}

static PyMethodDef methods[] = {
    {"unshare", py_unshare, METH_VARARGS, "unshare(2); -errno on failure."},
    {"setns", py_setns, METH_VARARGS, "setns(2); -errno on failure."},
    {"mount", py_mount, METH_VARARGS, "mount(2); -errno on failure."},
    {"umount2", py_umount2, METH_VARARGS, "umount2(2); -errno on failure."},
    {"mount_setattr", py_mount_setattr, METH_VARARGS, "mount_setattr(2); -errno on failure."},
    {"openat2", py_openat2, METH_VARARGS, "openat2(2): a fd, or -errno."},
    {"prctl", py_prctl, METH_VARARGS, "prctl(2): its result, or -errno."},
    {"sethostname", py_sethostname, METH_VARARGS, "sethostname(2); -errno on failure."},
    {"socket", py_socket, METH_VARARGS, "socket(2): a fd, or -errno."},
    {"seccomp_version", py_seccomp_version, METH_NOARGS,
     "libseccomp's (major, minor, micro), or why it cannot be loaded (a str)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "repeatr.linux._libc",
    .m_doc = "The kernel calls of repeatr.linux.libc, compiled (-errno on failure); use that.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__libc(void) { return PyModule_Create(&module); }
