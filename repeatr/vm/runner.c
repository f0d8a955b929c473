/* The guest's job runner: the last step of the VM's /init (repeatr.vm.guest).
 *
 * /init (busybox sh) has loaded the modules, mounted the shared root on
 * /newroot and the job's /proc and /dev in it, opened the job's ports and
 * exec'd this as PID 1 with fd 1 and 2 the job's stdout and stderr ports and
 * fd 3 the status port. The job's data is in /job (a cpio repeatr appended
 * to the initramfs): exec, argv and env (NUL-separated), cwd, uid, gid, caps
 * (a decimal bit mask), seccomp (a BPF program, raw sock_filter records;
 * empty: none), cgroup (a cgroup v2 dir to join, or empty).
 *
 * It forks the job into a pid namespace of its own, so the job is PID 1 there
 * and sees only its own processes, as on every other executor (not the guest's
 * kernel threads or this runner). The child mounts the job's /proc (from
 * inside that namespace: a proc mount shows its mounter's pid namespace) with
 * runc's masked and read-only paths (/job/mounts: "proc:DEST" words) after
 * joining the cgroup, in a mount namespace of its own where it then detaches
 * the initramfs's /proc and /sys, moves /newroot over / and chroots there
 * (the initramfs is no longer reachable), changes to the cwd,
 * drops every capability not in caps (bounding set first), takes the gid
 * and uid, sets no_new_privs, installs the seccomp filter and execs. The
 * parent, PID 1, reaps every process until the job is gone, writes
 * "exit CODE SIGNAL OOM\n" on the status port (CODE 128+N for signal N, OOM
 * the cgroup's count of OOM kills) and
 * powers the VM off, which ends whatever the job left behind.
 *
 * Static, libc only (built with `gcc -static -Os` when the guest is
 * prepared). Errors before the exec go to the stderr port as
 * "repeatr-vm: ..." and exit 127, reported like any other exit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 2, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if (n > (int)sizeof buf - 2) n = sizeof buf - 2;
    buf[n++] = '\n';
    dprintf(2, "repeatr-vm: %.*s", n, buf);
    _exit(127);
}

/* The whole file; *len its size. Never NULL (dies instead). */
static char *slurp(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open %s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (n == cap) buf = realloc(buf, (cap *= 2) + 1);
        if (!buf) die("out of memory reading %s", path);
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0) die("read %s: %s", path, strerror(errno));
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *len = n;
    return buf;
}

static char *text(const char *path) {
    size_t n;
    char *s = slurp(path, &n);
    while (n && (s[n - 1] == '\n')) s[--n] = 0;
    return s;
}

/* NUL-separated strings as a NULL-terminated vector. */
static char **strings(const char *path) {
    size_t n;
    char *s = slurp(path, &n);
    size_t count = 0;
    for (size_t i = 0; i < n; i++) count += s[i] == 0;
    char **v = calloc(count + 1, sizeof *v);
    if (!v) die("out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i += strlen(s + i) + 1) v[k++] = s + i;
    v[k] = NULL;
    return v;
}

static void write_file(const char *path, const char *value) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, value, strlen(value)) < 0) die("write %s: %s", path, strerror(errno));
    close(fd);
}

static void drop_privileges(unsigned long long caps, uid_t uid, gid_t gid) {
    int last = 63;
    while (last >= 0 && prctl(PR_CAPBSET_READ, last, 0, 0, 0) < 0) last--;
    for (int c = 0; c <= last; c++)
        if (!(caps >> c & 1) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0)
            die("PR_CAPBSET_DROP %d: %s", c, strerror(errno));
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0) die("ambient: %s", strerror(errno));
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) die("keepcaps: %s", strerror(errno));
    if (setgroups(0, NULL) < 0) die("setgroups: %s", strerror(errno));
    if (setresgid(gid, gid, gid) < 0) die("setresgid %u: %s", gid, strerror(errno));
    if (setresuid(uid, uid, uid) < 0) die("setresuid %u: %s", uid, strerror(errno));
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    for (int i = 0; i < 2; i++) {
        unsigned int bits = (unsigned int)(caps >> (32 * i));
        data[i].effective = data[i].permitted = data[i].inheritable = bits;
    }
    if (syscall(SYS_capset, &hdr, data) < 0) die("capset: %s", strerror(errno));
    for (int c = 0; c <= last; c++)
        if (caps >> c & 1) prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0);
    prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
}

#define PROC_FLAGS (MS_NOSUID | MS_NODEV | MS_NOEXEC)

/* A /proc mount at DEST with runc's masked paths (/job/proc-masked: a directory
 * gets an empty read-only tmpfs, a file /dev/null) and read-only ones
 * (/job/proc-readonly: bound on themselves, remounted read-only); both lists
 * are names under /proc, one a line (repeatr.assemble.ops). */
static void mount_proc(const char *dest) {
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "/newroot%s", dest);
    if (mount("proc", dir, "proc", PROC_FLAGS, NULL) < 0) die("mount proc on %s: %s", dest, strerror(errno));
    struct stat st;
    char *readonly = text("/job/proc-readonly"), *masked = text("/job/proc-masked");
    for (char *name = strtok(readonly, "\n"); name; name = strtok(NULL, "\n")) {
        snprintf(path, sizeof path, "%s/%s", dir, name);
        if (stat(path, &st) < 0) continue;
        if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0 ||
            mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | PROC_FLAGS, NULL) < 0)
            die("read-only %s: %s", path, strerror(errno));
    }
    for (char *name = strtok(masked, "\n"); name; name = strtok(NULL, "\n")) {
        snprintf(path, sizeof path, "%s/%s", dir, name);
        if (stat(path, &st) < 0) continue;
        int r = S_ISDIR(st.st_mode) ? mount("tmpfs", path, "tmpfs", MS_RDONLY | PROC_FLAGS, NULL)
                                    : mount("/dev/null", path, NULL, MS_BIND, NULL);
        if (r < 0) die("mask %s: %s", path, strerror(errno));
    }
    free(readonly);
    free(masked);
}

/* The job's /proc mounts: "proc:DEST" words of /job/mounts (dev: is /init's). */
static void mount_procs(void) {
    char *mounts = text("/job/mounts"), *save = NULL;
    for (char *word = strtok_r(mounts, " \n", &save); word; word = strtok_r(NULL, " \n", &save))
        if (!strncmp(word, "proc:", 5)) mount_proc(word + 5);
}

static void job(void) {
    char *exec = text("/job/exec");
    char **argv = strings("/job/argv");
    char **env = strings("/job/env");
    char *cwd = text("/job/cwd");
    uid_t uid = (uid_t)strtoul(text("/job/uid"), NULL, 10);
    gid_t gid = (gid_t)strtoul(text("/job/gid"), NULL, 10);
    unsigned long long caps = strtoull(text("/job/caps"), NULL, 10);
    size_t filter_len;
    char *filter = slurp("/job/seccomp", &filter_len);
    char *cgroup = text("/job/cgroup");

    setsid();
    if (*cgroup) {
        char procs[512];
        snprintf(procs, sizeof procs, "%s/cgroup.procs", cgroup);
        write_file(procs, "0");
    }
    /* A mount namespace of the job's own, without the initramfs's /proc and
     * /sys: a proc or sysfs mounted in full anywhere in its namespace lets a
     * job with CAP_SYS_ADMIN in a user namespace of its own mount a fresh,
     * unmasked one (the kernel's mount_too_revealing), as on the host. */
    if (unshare(CLONE_NEWNS) < 0) die("unshare the mount namespace: %s", strerror(errno));
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        die("make the mounts private: %s", strerror(errno));
    mount_procs();
    if (umount2("/sys", MNT_DETACH) < 0) die("detach /sys: %s", strerror(errno));
    if (umount2("/proc", MNT_DETACH) < 0) die("detach /proc: %s", strerror(errno));
    if (chdir("/newroot") < 0) die("chdir /newroot: %s", strerror(errno));
    if (mount(".", "/", NULL, MS_MOVE, NULL) < 0) die("move the root: %s", strerror(errno));
    if (chroot(".") < 0) die("chroot: %s", strerror(errno));
    if (chdir("/") < 0) die("chdir /: %s", strerror(errno));
    if (chdir(cwd) < 0) die("cwd %s: %s", cwd, strerror(errno));
    drop_privileges(caps, uid, gid);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("no_new_privs: %s", strerror(errno));
    if (filter_len) {
        struct sock_fprog prog = {
            (unsigned short)(filter_len / sizeof(struct sock_filter)), (struct sock_filter *)filter};
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
            die("seccomp: %s", strerror(errno));
    }
    for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(exec, argv, env);
    die("exec %s: %s", exec, strerror(errno));
}

/* The oom_kill count of the job's cgroup (0 without one). */
static long oom_kills(const char *cgroup) {
    if (!*cgroup) return 0;
    char path[512];
    snprintf(path, sizeof path, "%s/memory.events", cgroup);
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    char key[64];
    long value, found = 0;
    while (fscanf(f, "%63s %ld", key, &value) == 2)
        if (!strcmp(key, "oom_kill")) found = value;
    fclose(f);
    return found;
}

int main(void) {
    char *cgroup = text("/job/cgroup");
    if (unshare(CLONE_NEWPID) < 0) die("unshare the pid namespace: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        close(3);
        job();
    }
    int status = 0;
    for (;;) {
        pid_t got = wait(&status);
        if (got == pid) break;
        if (got < 0 && errno != EINTR) die("wait: %s", strerror(errno));
    }
    int code = 0, sig = 0;
    if (WIFSIGNALED(status)) {
        sig = WTERMSIG(status);
        code = 128 + sig;
    } else {
        code = WEXITSTATUS(status);
    }
    dprintf(3, "exit %d %d %ld\n", code, sig, oom_kills(cgroup));
    fsync(3);
    kill(-1, SIGKILL);
    sync();
    reboot(RB_POWER_OFF);
    return 0;
}
