/* The job's start, without a second fork of the interpreter.
 *
 * repeatr.executors.sandbox (the helper, forked from the sandbox server)
 * starts each ns/chroot job here: clone(CLONE_VM | CLONE_VFORK), as
 * CPython's _posixsubprocess does with vfork, so no page table of the
 * ~25 MB interpreter is copied and the child faults nothing in; the child
 * runs only the C below, on a stack of its own, and the helper resumes
 * when it has exec'd (or exited). Everything the child needs (paths, the
 * argv and env arrays, descriptors, the seccomp program) is prepared by
 * the caller before the clone: the child allocates nothing and calls only
 * async-signal-safe functions and raw system calls (set*id through
 * syscall(2): glibc's wrappers would signal the helper's threads, whose
 * memory the child shares).
 *
 * The child does what the Python job child did, in the same order, and
 * what runc and crun do besides: every signal back to default (an ignored
 * one too), umask 0022, join the run's cgroups, stdin, every other descriptor
 * close-on-exec, oom_score_adj 0, setsid (and the controlling tty of an interactive job),
 * PR_SET_PDEATHSIG, a session keyring of its own, unshare(CLONE_NEWNS),
 * the late mounts (/proc, masked and read-only as runc), pivot_root into
 * the root and detach the old one, the bounding set, then ids, then
 * capabilities (and ambient), no_new_privs, the death signal again, chdir
 * to the job's cwd, the exec lookup inside the root (openat2
 * RESOLVE_IN_ROOT, as the job's user), seccomp last, no signal blocked,
 * execve.
 *
 * A failure is written to the error pipe as one struct jobstart_failure
 * (step, errno, index); the caller turns it into the same Error report as
 * before. End of stream on the pipe (it is close-on-exec) means the exec
 * succeeded.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/keyctl.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442 /* asm-generic/unistd.h */
#endif
#ifndef SYS_openat2
#define SYS_openat2 437 /* asm-generic/unistd.h */
#endif
#ifndef SYS_close_range
#define SYS_close_range 436 /* asm-generic/unistd.h */
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2) /* linux/close_range.h */
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47 /* linux/prctl.h */
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

/* The steps, as the caller names them (repeatr.linux.jobstart.STEPS). */
enum step {
    STEP_CGROUP = 1, STEP_STDIN, STEP_SETSID, STEP_TTY, STEP_PDEATHSIG, STEP_KEYRING,
    STEP_SIGNALS, STEP_UNSHARE, STEP_PROC_MOUNT, STEP_PROC_OPEN, STEP_MASK, STEP_READONLY,
    STEP_PIVOT, STEP_CAPS, STEP_IDS, STEP_NO_NEW_PRIVS, STEP_CWD, STEP_NOT_EXECUTABLE,
    STEP_NO_FILE, STEP_NOT_IN_PATH, STEP_SECCOMP, STEP_EXEC, STEP_CLOSE_FDS, STEP_OOM_SCORE,
};

struct jobstart_failure {
    int32_t step;
    int32_t err;
    int32_t index; /* which cgroup, proc mount or hardening path; else 0 */
};

/* One hardening entry under a /proc mount: a name in it, masked or read-only. */
struct hardening {
    const char *name;
    int masked;
};

struct proc_mount {
    const char *dest; /* the mount point, below the root: "proc" */
    const char *data; /* NULL or "hidepid=..." */
    struct hardening *hardening;
    Py_ssize_t n_hardening;
};

struct job {
    const char *root;
    char *const *argv;
    char *const *envp;
    const char *const *candidates;
    Py_ssize_t n_candidates;
    int slash; /* argv[0] has a '/': taken as is */
    const char *cwd;
    struct proc_mount *procs;
    Py_ssize_t n_procs;
    const int *cgroup_fds;
    Py_ssize_t n_cgroups;
    const int *close_fds; /* the helper's, closed first (the error pipe's read end...) */
    Py_ssize_t n_close;
    int stdin_fd; /* -1: interactive, stdin is the pty to make the controlling tty */
    int errw;
    uid_t uid;
    gid_t gid;
    uint64_t caps;
    int last_cap;
    struct sock_fprog seccomp; /* len 0: none */
};

static void fd_path(char *buf, size_t size, int fd) {
    /* "/proc/self/fd/N", no snprintf (not async-signal-safe). */
    static const char prefix[] = "/proc/self/fd/";
    char digits[16];
    int n = 0;
    unsigned int v = (unsigned int)fd;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && n < (int)sizeof(digits));
    size_t at = sizeof(prefix) - 1;
    if (at + (size_t)n + 1 > size) {
        buf[0] = '\0';
        return;
    }
    memcpy(buf, prefix, at);
    while (n)
        buf[at++] = digits[--n];
    buf[at] = '\0';
}

static _Noreturn void fail(const struct job *job, int step, int err, int index) {
    struct jobstart_failure f = {step, err, index};
    ssize_t left = (ssize_t)sizeof(f);
    const char *p = (const char *)&f;
    while (left > 0) {
        ssize_t n = write(job->errw, p, (size_t)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        p += n;
        left -= n;
    }
    _exit(127);
}

/* The helper holds the read end of errw: POLLERR means it is gone. */
static int parent_alive(int errw) {
    struct pollfd p = {errw, 0, 0};
    if (poll(&p, 1, 0) < 0)
        return 1;
    return !(p.revents & (POLLERR | POLLHUP));
}

static int open_in_root(int rootfd, const char *path, int flags) {
    struct open_how how;
    memset(&how, 0, sizeof(how));
    how.flags = (uint64_t)(flags | O_CLOEXEC);
    how.resolve = RESOLVE_IN_ROOT;
    while (*path == '/')
        path++;
    if (!*path)
        path = ".";
    return (int)syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
}

/* An O_PATH descriptor of directory ``rel`` below ``dirfd``, refusing every
 * symlink (repeatr.assemble.resolve.open_in_root, without creating anything:
 * the helper made the mount point): -1 with errno (ENOTDIR for a symlink).
 * Opened in the job's own mount namespace: a descriptor from before its
 * unshare would name the helper's mounts. */
static int open_beneath(int dirfd, const char *rel) {
    char part[256];
    int fd = openat(dirfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    while (fd >= 0) {
        while (*rel == '/')
            rel++;
        if (!*rel)
            return fd;
        size_t n = strcspn(rel, "/");
        if (n >= sizeof(part)) {
            close(fd);
            errno = ENAMETOOLONG;
            return -1;
        }
        memcpy(part, rel, n);
        part[n] = '\0';
        rel += n;
        int next = openat(fd, part, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
        int err = errno;
        close(fd);
        errno = err;
        fd = next;
    }
    return -1;
}

static void mount_proc(const struct job *job, int rootfd, Py_ssize_t i) {
    const struct proc_mount *pm = &job->procs[i];
    int target_fd = open_beneath(rootfd, pm->dest);
    if (target_fd < 0)
        fail(job, STEP_PROC_OPEN, errno, (int)i);
    char target[64];
    fd_path(target, sizeof(target), target_fd);
    if (mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, pm->data) < 0)
        fail(job, STEP_PROC_MOUNT, errno, (int)i);
    close(target_fd);
    /* The new mount's root: the path looked up again. */
    int procfd = open_beneath(rootfd, pm->dest);
    if (procfd < 0)
        fail(job, STEP_PROC_OPEN, errno, (int)i);
    for (Py_ssize_t h = 0; h < pm->n_hardening; h++) {
        const struct hardening *entry = &pm->hardening[h];
        int step = entry->masked ? STEP_MASK : STEP_READONLY;
        int index = (int)(i << 16 | h);
        int fd = openat(procfd, entry->name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT)
                continue; /* nothing to hide */
            fail(job, step, errno, index);
        }
        char path[64];
        fd_path(path, sizeof(path), fd);
        if (entry->masked) {
            struct stat st;
            if (fstat(fd, &st) < 0)
                fail(job, step, errno, index);
            int r = S_ISDIR(st.st_mode)
                ? mount("tmpfs", path, "tmpfs",
                        MS_RDONLY | MS_NODEV | MS_NOSUID | MS_NOEXEC, "mode=555,size=4k")
                : mount("/dev/null", path, NULL, MS_BIND, NULL);
            if (r < 0)
                fail(job, step, errno, index);
            close(fd);
            continue;
        }
        if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0)
            fail(job, step, errno, index);
        close(fd);
        fd = openat(procfd, entry->name, O_PATH | O_NOFOLLOW | O_CLOEXEC); /* the new mount */
        if (fd < 0)
            fail(job, step, errno, index);
        struct mount_attr attr;
        memset(&attr, 0, sizeof(attr));
        attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
            | MOUNT_ATTR_NOEXEC;
        if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr,
                    sizeof(attr)) < 0)
            fail(job, step, errno, index);
        close(fd);
    }
    close(procfd);
}

/* Bounding set, then gid/uid, then effective/permitted/inheritable/ambient. */
static void drop_privileges(const struct job *job) {
    for (int cap = 0; cap <= job->last_cap; cap++) {
        if (job->caps >> cap & 1)
            continue;
        int r = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
        if (r < 0)
            fail(job, STEP_CAPS, errno, cap);
        if (r == 1 && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
            fail(job, STEP_CAPS, errno, cap);
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
        fail(job, STEP_CAPS, errno, -1);
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        fail(job, STEP_CAPS, errno, -1);
    if (syscall(SYS_setgroups, 0, NULL) < 0)
        fail(job, STEP_IDS, errno, 0);
    if (syscall(SYS_setresgid, job->gid, job->gid, job->gid) < 0)
        fail(job, STEP_IDS, errno, 1);
    if (syscall(SYS_setresuid, job->uid, job->uid, job->uid) < 0)
        fail(job, STEP_IDS, errno, 2);
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capget, &hdr, data) < 0)
        fail(job, STEP_CAPS, errno, -1);
    uint64_t permitted = (uint64_t)data[0].permitted | (uint64_t)data[1].permitted << 32;
    uint64_t keep = job->caps & permitted;
    memset(data, 0, sizeof(data));
    for (int i = 0; i < 2; i++) {
        uint32_t word = (uint32_t)(keep >> (32 * i));
        data[i].effective = data[i].permitted = data[i].inheritable = word;
    }
    hdr.version = _LINUX_CAPABILITY_VERSION_3;
    hdr.pid = 0;
    if (syscall(SYS_capset, &hdr, data) < 0)
        fail(job, STEP_CAPS, errno, -1);
    for (int cap = 0; cap < 64; cap++) {
        if (keep >> cap & 1 && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0)
            fail(job, STEP_CAPS, errno, cap);
    }
    if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
        fail(job, STEP_CAPS, errno, -1);
}

/* Which candidate execvp would run, looked up inside the root as the job's user. */
static Py_ssize_t find_exec(const struct job *job) {
    int rootfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        fail(job, STEP_NO_FILE, errno, 0);
    for (Py_ssize_t i = 0; i < job->n_candidates; i++) {
        int fd = open_in_root(rootfd, job->candidates[i], O_PATH);
        if (fd < 0)
            continue;
        struct stat st;
        int r = fstat(fd, &st);
        close(fd);
        if (r < 0 || !S_ISREG(st.st_mode))
            continue;
        if (st.st_mode & 0111) {
            close(rootfd);
            return i;
        }
        if (job->slash)
            fail(job, STEP_NOT_EXECUTABLE, EACCES, 0);
    }
    fail(job, job->slash ? STEP_NO_FILE : STEP_NOT_IN_PATH, ENOENT, 0);
}

static int job_child(void *arg) {
    const struct job *job = arg;
    /* Every signal is blocked (the caller's doing): no handler of the
     * interpreter's may run here. Back to default before anything else:
     * every one, an ignored one too (as crun does). SIG_IGN survives execve,
     * so one the helper ignores (SIGPIPE, SIGXFSZ: the interpreter's; SIGINT:
     * the server's) or that whoever started `repeatr run` ignored (a shell's
     * `trap '' QUIT`, nohup) would be the job's too. */
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) < 0)
            continue; /* not a signal number (32, 33: glibc's own) */
        if (sa.sa_handler == SIG_DFL)
            continue;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_DFL;
        if (sigaction(sig, &sa, NULL) < 0)
            fail(job, STEP_SIGNALS, errno, sig);
    }
    /* The job's umask is runc's and crun's, not whatever the invoker of
     * `repeatr run` had (the modes of its outputs, hence their hashes). Not
     * the helper's: the child has its own copy (no CLONE_FS). */
    umask(022);
    for (Py_ssize_t i = 0; i < job->n_close; i++)
        close(job->close_fds[i]);
    for (Py_ssize_t i = 0; i < job->n_cgroups; i++) {
        /* first: everything the job does is limited */
        if (write(job->cgroup_fds[i], "0", 1) != 1)
            fail(job, STEP_CGROUP, errno, (int)i);
    }
    if (job->stdin_fd >= 0 && dup2(job->stdin_fd, 0) < 0)
        fail(job, STEP_STDIN, errno, 0);
    /* Nothing but stdio reaches the job, as runc makes sure: every other
     * descriptor close-on-exec (the error pipe and the cgroups' stay open
     * until the execve), whether or not whoever opened it said so (an
     * inheritable one of the helper's, or of whoever started a replay). */
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        fail(job, STEP_CLOSE_FDS, errno, 0);
    /* oom_score_adj 0, as Docker asks of runc: not the invoker's (a service's
     * -1000 would leave a job the OOM killer never picks, and a job without
     * a memory limit would have the host's processes killed in its place).
     * Raising a value is always allowed; EACCES only means a privileged
     * supervisor raised the invoker's floor above 0: more killable, harmless. */
    int oom = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (oom < 0)
        fail(job, STEP_OOM_SCORE, errno, 0);
    if (write(oom, "0", 1) != 1 && errno != EACCES)
        fail(job, STEP_OOM_SCORE, errno, 1);
    close(oom);
    if (setsid() < 0)
        fail(job, STEP_SETSID, errno, 0);
    /* An interactive job's stdin is the pty the caller relays: this
     * session's terminal, so the shell gets job control. */
    if (job->stdin_fd < 0 && ioctl(0, TIOCSCTTY, 0) < 0)
        fail(job, STEP_TTY, errno, 0);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        fail(job, STEP_PDEATHSIG, errno, 0);
    if (!parent_alive(job->errw))
        _exit(1);
    /* A session keyring of its own (as runc and crun give). */
    if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) < 0)
        fail(job, STEP_KEYRING, errno, 0);
    /* PID 1 of the new pid namespace mounts its /proc in a nested mount
     * namespace (pivot_root never moves the helper's root), then pivots
     * and detaches the old root: no path leads back to the host's tree. */
    if (unshare(CLONE_NEWNS) < 0)
        fail(job, STEP_UNSHARE, errno, 0);
    int rootfd = open(job->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        fail(job, STEP_PROC_OPEN, errno, -1);
    for (Py_ssize_t i = 0; i < job->n_procs; i++)
        mount_proc(job, rootfd, i);
    close(rootfd);
    if (chdir(job->root) < 0)
        fail(job, STEP_PIVOT, errno, 0);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        fail(job, STEP_PIVOT, errno, 1);
    if (umount2(".", MNT_DETACH) < 0)
        fail(job, STEP_PIVOT, errno, 2);
    if (chdir("/") < 0)
        fail(job, STEP_PIVOT, errno, 3);
    drop_privileges(job);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        fail(job, STEP_NO_NEW_PRIVS, errno, 0);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) /* the uid change cleared it */
        fail(job, STEP_PDEATHSIG, errno, 1);
    if (!parent_alive(job->errw))
        _exit(1);
    if (chdir(job->cwd) < 0)
        fail(job, STEP_CWD, errno, 0);
    Py_ssize_t found = find_exec(job);
    /* last: the filter allows execve, not what came before it */
    if (job->seccomp.len && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &job->seccomp, 0, 0) < 0)
        fail(job, STEP_SECCOMP, errno, 0);
    /* None blocked: the mask survives execve, and the helper's is whatever
     * its invoker's was (a blocked SIGTERM would be the job's). */
    sigset_t none;
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
        fail(job, STEP_SIGNALS, errno, 0);
    execve(job->candidates[found], job->argv, job->envp);
    fail(job, STEP_EXEC, errno, (int)found);
}

/* --- the Python side: arguments into C arrays, then the clone ------------- */

/* Everything allocated for one start, freed whatever happens. */
struct arena {
    void **blocks;
    size_t n, cap;
};

static void *arena_alloc(struct arena *a, size_t size) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        void **blocks = PyMem_Realloc(a->blocks, cap * sizeof(void *));
        if (!blocks) {
            PyErr_NoMemory();
            return NULL;
        }
        a->blocks = blocks;
        a->cap = cap;
    }
    void *p = PyMem_Calloc(1, size ? size : 1);
    if (!p) {
        PyErr_NoMemory();
        return NULL;
    }
    a->blocks[a->n++] = p;
    return p;
}

static void arena_free(struct arena *a) {
    for (size_t i = 0; i < a->n; i++)
        PyMem_Free(a->blocks[i]);
    PyMem_Free(a->blocks);
}

/* A bytes object's C string (no copy: the caller keeps the object alive);
 * NULL with ValueError if it holds a NUL. */
static const char *c_string(PyObject *obj, const char *what) {
    if (!PyBytes_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: bytes expected", what);
        return NULL;
    }
    const char *s = PyBytes_AS_STRING(obj);
    if ((Py_ssize_t)strlen(s) != PyBytes_GET_SIZE(obj)) {
        PyErr_Format(PyExc_ValueError, "%s: embedded null byte", what);
        return NULL;
    }
    return s;
}

/* A NULL-terminated array of the C strings of a list of bytes. */
static char **c_strings(struct arena *a, PyObject *list, Py_ssize_t *count, const char *what) {
    if (!PyList_Check(list)) {
        PyErr_Format(PyExc_TypeError, "%s: a list expected", what);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(list);
    char **out = arena_alloc(a, (size_t)(n + 1) * sizeof(char *));
    if (!out)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *s = c_string(PyList_GET_ITEM(list, i), what);
        if (!s)
            return NULL;
        out[i] = (char *)s;
    }
    if (count)
        *count = n;
    return out;
}

static int parse_procs(struct arena *a, PyObject *list, struct job *job) {
    if (!PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, "procs: a list expected");
        return -1;
    }
    job->n_procs = PyList_GET_SIZE(list);
    job->procs = arena_alloc(a, (size_t)job->n_procs * sizeof(struct proc_mount));
    if (!job->procs)
        return -1;
    for (Py_ssize_t i = 0; i < job->n_procs; i++) {
        struct proc_mount *pm = &job->procs[i];
        PyObject *dest, *data, *hardening;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(list, i), "SOO!;procs: (bytes, bytes | None, list)",
                              &dest, &data, &PyList_Type, &hardening))
            return -1;
        if (!(pm->dest = c_string(dest, "procs dest")))
            return -1;
        pm->data = NULL;
        if (data != Py_None && !(pm->data = c_string(data, "procs data")))
            return -1;
        pm->n_hardening = PyList_GET_SIZE(hardening);
        pm->hardening = arena_alloc(a, (size_t)pm->n_hardening * sizeof(struct hardening));
        if (!pm->hardening)
            return -1;
        for (Py_ssize_t h = 0; h < pm->n_hardening; h++) {
            PyObject *hname;
            int masked;
            if (!PyArg_ParseTuple(PyList_GET_ITEM(hardening, h), "Sp;hardening: (bytes, bool)",
                                  &hname, &masked))
                return -1;
            if (!(pm->hardening[h].name = c_string(hname, "hardening name")))
                return -1;
            pm->hardening[h].masked = masked;
        }
    }
    return 0;
}

static int parse_ints(struct arena *a, PyObject *list, int **out, Py_ssize_t *count) {
    if (!PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, "fds: a list expected");
        return -1;
    }
    *count = PyList_GET_SIZE(list);
    *out = arena_alloc(a, (size_t)*count * sizeof(int));
    if (!*out)
        return -1;
    for (Py_ssize_t i = 0; i < *count; i++) {
        long v = PyLong_AsLong(PyList_GET_ITEM(list, i));
        if (v == -1 && PyErr_Occurred())
            return -1;
        (*out)[i] = (int)v;
    }
    return 0;
}

#define CHILD_STACK (256 * 1024)

static PyObject *start_job(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *keywords[] = {
        "root", "argv", "envp", "candidates", "slash", "cwd", "procs", "cgroup_fds", "close_fds",
        "stdin_fd", "errw", "uid", "gid", "caps", "last_cap", "seccomp", NULL,
    };
    PyObject *root, *argv, *envp, *candidates, *cwd, *procs, *cgroup_fds, *close_fds, *seccomp;
    int slash, stdin_fd, errw, last_cap;
    unsigned int uid, gid;
    unsigned long long caps;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "SO!O!O!pSO!O!O!iiIIKiS:start_job", keywords, &root, &PyList_Type,
            &argv, &PyList_Type, &envp, &PyList_Type, &candidates, &slash, &cwd, &PyList_Type,
            &procs, &PyList_Type, &cgroup_fds, &PyList_Type, &close_fds, &stdin_fd, &errw, &uid, &gid, &caps, &last_cap,
            &seccomp))
        return NULL;
    if (PyBytes_GET_SIZE(seccomp) % sizeof(struct sock_filter)
        || PyBytes_GET_SIZE(seccomp) / (Py_ssize_t)sizeof(struct sock_filter) > USHRT_MAX) {
        PyErr_SetString(PyExc_ValueError, "seccomp: not a BPF program (struct sock_filter array)");
        return NULL;
    }
    if (last_cap < 0 || last_cap > 63) {
        PyErr_SetString(PyExc_ValueError, "last_cap: out of range");
        return NULL;
    }

    struct arena a = {NULL, 0, 0};
    struct job job;
    PyObject *result = NULL;
    memset(&job, 0, sizeof(job));
    if (!(job.root = c_string(root, "root")) || !(job.cwd = c_string(cwd, "cwd")))
        goto out;
    if (!(job.argv = c_strings(&a, argv, NULL, "argv"))
        || !(job.envp = c_strings(&a, envp, NULL, "envp")))
        goto out;
    char **cands = c_strings(&a, candidates, &job.n_candidates, "candidates");
    if (!cands)
        goto out;
    job.candidates = (const char *const *)cands;
    if (PyList_GET_SIZE(argv) < 1) {
        PyErr_SetString(PyExc_ValueError, "argv: empty");
        goto out;
    }
    if (parse_procs(&a, procs, &job) < 0)
        goto out;
    int *fds;
    if (parse_ints(&a, cgroup_fds, &fds, &job.n_cgroups) < 0)
        goto out;
    job.cgroup_fds = fds;
    if (parse_ints(&a, close_fds, &fds, &job.n_close) < 0)
        goto out;
    job.close_fds = fds;
    job.slash = slash;
    job.stdin_fd = stdin_fd;
    job.errw = errw;
    job.uid = (uid_t)uid;
    job.gid = (gid_t)gid;
    job.caps = (uint64_t)caps;
    job.last_cap = last_cap;
    job.seccomp.len = (unsigned short)(PyBytes_GET_SIZE(seccomp) / sizeof(struct sock_filter));
    job.seccomp.filter = (struct sock_filter *)PyBytes_AS_STRING(seccomp);
    char *stack = arena_alloc(&a, CHILD_STACK);
    if (!stack)
        goto out;

    sigset_t all, old_mask;
    sigfillset(&all);
    int err = pthread_sigmask(SIG_SETMASK, &all, &old_mask);
    if (err) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        goto out;
    }
    /* The helper is single-threaded; CLONE_VFORK: back here once the
     * child has exec'd or exited. The stack grows down on x86_64 and arm64. */
    pid_t pid = clone(job_child, stack + CHILD_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, &job);
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    if (pid < 0) {
        errno = clone_errno;
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, "clone");
        goto out;
    }
    result = PyLong_FromLong((long)pid);
out:
    arena_free(&a);
    return result;
}

static PyMethodDef methods[] = {
    {"start_job", (PyCFunction)(void (*)(void))start_job, METH_VARARGS | METH_KEYWORDS,
     "Start a job: clone(CLONE_VM | CLONE_VFORK), set it up, exec (see the module)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "repeatr.linux._jobstart",
    "The job's start in C (clone(CLONE_VM | CLONE_VFORK)); see repeatr.linux.jobstart.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__jobstart(void) {
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddIntConstant(m, "FAILURE_SIZE", (long)sizeof(struct jobstart_failure)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
