/* attack: one harmless attack per subcommand, run inside a repeatr job.
 *
 * Built once per test session by tests/security/conftest.py with
 * `gcc -static -O1` and packed into the rootfs ware the attacks run in.
 * Every subcommand prints exactly one result line and exits 0:
 *
 *     BLOCKED <subcommand> <why>      the attack did not get through
 *     SUCCEEDED <subcommand> <what>   it did
 *
 * Payloads are harmless: sysctls are rewritten with their own current
 * value, device nodes are opened read-only and never read, kernel-loading
 * calls are made with arguments that fail right after the permission check
 * (so "the permission check passed" is the success), markers are written
 * only to paths the test gives. Whether an attack that *reports* success
 * reached the host is for the test to judge (it checks the host side).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/fs.h>
#include <linux/keyctl.h>
#include <linux/kexec.h>
#include <linux/perf_event.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/msg.h>
#include <sys/reboot.h>
#include <linux/reboot.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static const char *cmd = "?";
static char why[4096]; /* the reasons collected for BLOCKED */

static void note(const char *fmt, ...) {
    size_t n = strlen(why);
    if (n + 3 >= sizeof why) return;
    if (n) { strcat(why, "; "); n += 2; }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why + n, sizeof why - n, fmt, ap);
    va_end(ap);
}

static int succeeded(const char *fmt, ...) {
    char what[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    printf("SUCCEEDED %s %s\n", cmd, what);
    fflush(stdout);
    return 0;
}

static int blocked(void) {
    printf("BLOCKED %s %s\n", cmd, why[0] ? why : "(nothing tried)");
    fflush(stdout);
    return 0;
}

/* errno values that mean "refused", as opposed to "permitted, then bad arguments" */
static int refused(int e) { return e == EPERM || e == EACCES || e == ENOSYS || e == EROFS; }

/* --- files ---------------------------------------------------------------- */

static ssize_t read_file(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, size - 1);
    int e = errno;
    close(fd);
    errno = e;
    if (n >= 0) buf[n] = 0;
    return n;
}

/* sysctl-write PATH...: write each sysctl's own current value back */
static int sysctl_write(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        char value[4096];
        ssize_t n = read_file(argv[i], value, sizeof value);
        if (n < 0) { note("read %s: %s", argv[i], strerror(errno)); continue; }
        int fd = open(argv[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0) { note("open %s for writing: %s", argv[i], strerror(errno)); continue; }
        ssize_t w = write(fd, value, (size_t)n);
        int e = errno;
        close(fd);
        if (w == n) return succeeded("rewrote %s", argv[i]);
        note("write %s: %s", argv[i], w < 0 ? strerror(e) : "short write");
    }
    return blocked();
}

/* For a device node that opened: proof that it is the host's device, from a
 * harmless ioctl (a node an application kernel serves itself fails it). */
static int host_device(int fd, char *proof, size_t size) {
    struct stat st;
    if (fstat(fd, &st) != 0) return 0;
    if (S_ISBLK(st.st_mode)) {
        unsigned long long bytes = 0;
        if (ioctl(fd, BLKGETSIZE64, &bytes) == 0 && bytes > 0) {
            snprintf(proof, size, "block device of %llu bytes", bytes);
            return 1;
        }
        snprintf(proof, size, "BLKGETSIZE64: %s", strerror(errno));
        return 0;
    }
    if (S_ISCHR(st.st_mode) && major(st.st_rdev) == 10 && minor(st.st_rdev) == 232) {
        int version = ioctl(fd, 0xAE00 /* KVM_GET_API_VERSION */, 0);
        if (version > 0) {
            snprintf(proof, size, "KVM API version %d", version);
            return 1;
        }
        snprintf(proof, size, "KVM_GET_API_VERSION: %s", strerror(errno));
        return 0;
    }
    if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 1)) {
        snprintf(proof, size, "/dev/mem, which the kernel opens only with CAP_SYS_RAWIO");
        return 1;
    }
    if (S_ISCHR(st.st_mode)) {
        snprintf(proof, size, "a char device %u:%u", major(st.st_rdev), minor(st.st_rdev));
        return 0;
    }
    snprintf(proof, size, "mode %o", st.st_mode);
    return 1;
}

/* open-ro PATH...: open each read-only (device nodes, /proc/kcore); read nothing */
static int open_ro(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0) { note("%s: %s", argv[i], strerror(errno)); continue; }
        char proof[256];
        int real = host_device(fd, proof, sizeof proof);
        close(fd);
        if (real) return succeeded("opened %s (%s)", argv[i], proof);
        note("%s opened, but it is not the host's device (%s)", argv[i], proof);
    }
    return blocked();
}

/* open-wo PATH...: open each for writing, write nothing (/proc/sysrq-trigger) */
static int open_wo(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        int fd = open(argv[i], O_WRONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd >= 0) { close(fd); return succeeded("opened %s for writing", argv[i]); }
        note("%s: %s", argv[i], strerror(errno));
    }
    return blocked();
}

static int write_marker(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return -1;
    ssize_t w = write(fd, "attack\n", 7);
    int e = errno;
    close(fd);
    errno = e;
    return w == 7 ? 0 : -1;
}

/* write-files PATH...: create a marker at each path */
static int write_files(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        if (write_marker(argv[i]) == 0) return succeeded("wrote %s", argv[i]);
        note("%s: %s", argv[i], strerror(errno));
    }
    return blocked();
}

/* ro-mount DIR: write into a read-only mount, remount it rw, write again */
static int ro_mount(int argc, char **argv) {
    if (argc < 1) return blocked();
    char path[4096];
    snprintf(path, sizeof path, "%s/attack-marker", argv[0]);
    if (write_marker(path) == 0) return succeeded("wrote %s", path);
    note("write %s: %s", path, strerror(errno));
    if (mount(NULL, argv[0], NULL, MS_REMOUNT | MS_BIND, NULL) == 0) {
        if (write_marker(path) == 0) return succeeded("remounted %s rw and wrote it", argv[0]);
        note("remounted, then write: %s", strerror(errno));
    } else {
        note("remount rw: %s", strerror(errno));
    }
    return blocked();
}

/* overlay-lower: find the root overlay's lower and upper dirs (host paths) in
 * mountinfo and write into the lowest (a ware's shelf in the cache) */
static int overlay_lower(int argc, char **argv) {
    (void)argc; (void)argv;
    char info[65536];
    if (read_file("/proc/self/mountinfo", info, sizeof info) < 0) {
        note("mountinfo: %s", strerror(errno));
        return blocked();
    }
    int tried = 0;
    for (char *line = strtok(info, "\n"); line; line = strtok(NULL, "\n")) {
        char *lower = strstr(line, "lowerdir=");
        if (!lower) continue;
        lower += strlen("lowerdir=");
        char dir[4096];
        size_t n = strcspn(lower, ",: ");
        if (n >= sizeof dir) continue;
        memcpy(dir, lower, n);
        dir[n] = 0;
        char path[4200];
        snprintf(path, sizeof path, "%s/attack-marker", dir);
        tried++;
        if (write_marker(path) == 0) return succeeded("wrote %s", path);
        note("%s: %s", path, strerror(errno));
    }
    if (!tried) note("no overlay lowerdir in mountinfo");
    return blocked();
}

/* --- processes ----------------------------------------------------------- */

static int contains(const char *path, const char *needle) {
    static char buf[1 << 16];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    int e = errno;
    close(fd);
    if (n < 0) { errno = e; return -1; }
    for (ssize_t i = 0; i < n; i++) if (!buf[i]) buf[i] = ' ';
    buf[n] = 0;
    return strstr(buf, needle) != NULL;
}

/* proc-peek PID SECRET HOSTFILE: a host process's environment and root */
static int proc_peek(int argc, char **argv) {
    if (argc < 3) return blocked();
    char path[4200];
    snprintf(path, sizeof path, "/proc/%s/environ", argv[0]);
    int r = contains(path, argv[1]);
    if (r == 1) return succeeded("read the secret in %s", path);
    note("%s: %s", path, r < 0 ? strerror(errno) : "no secret (another process)");
    snprintf(path, sizeof path, "/proc/%s/root%s", argv[0], argv[2]);
    r = contains(path, argv[1]);
    if (r == 1) return succeeded("read the secret in %s", path);
    note("%s: %s", path, r < 0 ? strerror(errno) : "no secret");
    return blocked();
}

/* read-files SECRET PATH...: read a host file by its host path */
static int read_files(int argc, char **argv) {
    if (argc < 1) return blocked();
    for (int i = 1; i < argc; i++) {
        int r = contains(argv[i], argv[0]);
        if (r == 1) return succeeded("read the secret in %s", argv[i]);
        note("%s: %s", argv[i], r < 0 ? strerror(errno) : "no secret");
    }
    return blocked();
}

/* kill PID...: SIGKILL each (the test checks whether the host processes live) */
static int kill_pids(int argc, char **argv) {
    int any = 0;
    char done[1024] = "";
    for (int i = 0; i < argc; i++) {
        pid_t pid = (pid_t)atoi(argv[i]);
        if (pid <= 1) continue;
        if (kill(pid, SIGKILL) == 0) {
            any = 1;
            size_t n = strlen(done);
            snprintf(done + n, sizeof done - n, " %d", pid);
        } else {
            note("kill %d: %s", pid, strerror(errno));
        }
    }
    if (any) return succeeded("signalled%s", done);
    return blocked();
}

/* ptrace PID SECRET: attach to a host process (verified by its environment) */
static int ptrace_attach(int argc, char **argv) {
    if (argc < 2) return blocked();
    pid_t pid = (pid_t)atoi(argv[0]);
    if (ptrace(PTRACE_ATTACH, pid, NULL, NULL) != 0) {
        note("PTRACE_ATTACH %d: %s", pid, strerror(errno));
        return blocked();
    }
    int status;
    waitpid(pid, &status, __WALL);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/environ", pid);
    int r = contains(path, argv[1]);
    ptrace(PTRACE_DETACH, pid, NULL, NULL);
    if (r == 1) return succeeded("attached to %d (its environment has the secret)", pid);
    note("attached to %d, which is not the host process", pid);
    return blocked();
}

/* job-root MARKER read|write RELPATH: through /proc, find a process whose command
 * line has "victim-MARKER" (another job) and read or write in its root */
static int job_root(int argc, char **argv) {
    if (argc < 3) return blocked();
    char needle[256];
    snprintf(needle, sizeof needle, "victim-%s", argv[0]);
    int writing = strcmp(argv[1], "write") == 0;
    DIR *d = opendir("/proc");
    if (!d) { note("/proc: %s", strerror(errno)); return blocked(); }
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        if (atoi(e->d_name) == getpid()) continue;
        char path[4200];
        snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
        if (contains(path, needle) != 1) continue;
        found++;
        snprintf(path, sizeof path, "/proc/%s/root%s", e->d_name, argv[2]);
        if (writing) {
            if (write_marker(path) == 0) { closedir(d); return succeeded("wrote %s", path); }
        } else {
            int r = contains(path, argv[0]);
            if (r == 1) { closedir(d); return succeeded("read %s", path); }
        }
        note("%s: %s", path, strerror(errno));
    }
    closedir(d);
    if (!found) note("no process of the other job is visible");
    return blocked();
}

/* linger MARKER: a process that would outlive the run */
static int linger(int argc, char **argv) {
    (void)argc; (void)argv;
    for (int i = 0; i < 600; i++) sleep(1);
    return 0;
}

/* start a detached daemon (setsid, double fork) that holds the job's stdout */
static void start_daemon(const char *marker_arg) {
    pid_t child = fork();
    if (child == 0) {
        setsid();
        if (fork() == 0) {
            char marker[256];
            snprintf(marker, sizeof marker, "linger-%s", marker_arg);
            execl("/proc/self/exe", "attack", "linger", marker, (char *)NULL);
            execl("/bin/attack", "attack", "linger", marker, (char *)NULL);
            _exit(127);
        }
        _exit(0);
    }
    waitpid(child, NULL, 0);
}

/* daemon MARKER: leave a daemon behind and exit (it must not outlive the run) */
static int daemon_(int argc, char **argv) {
    if (argc < 1) return blocked();
    start_daemon(argv[0]);
    note("left a daemon; the test checks it is gone after the run");
    return blocked();
}

/* kill-parent MARKER: leave a daemon, then SIGKILL the process that started the
 * job (the sandbox helper) */
static int kill_parent(int argc, char **argv) {
    if (argc < 1) return blocked();
    pid_t parent = getppid();
    start_daemon(argv[0]);
    if (parent <= 0) {
        note("no parent visible (ppid %d)", parent);
        return blocked();
    }
    if (kill(parent, SIGKILL) == 0) return succeeded("killed the parent %d", parent);
    note("kill parent %d: %s", parent, strerror(errno));
    return blocked();
}

/* chroot-twice HOSTPATH: the classic chroot escape, then a marker at HOSTPATH */
static int chroot_twice(int argc, char **argv) {
    if (argc < 1) return blocked();
    mkdir("/tmp/attack-jail", 0700);
    if (chroot("/tmp/attack-jail") != 0) {
        note("chroot: %s", strerror(errno));
        return blocked();
    }
    for (int i = 0; i < 256; i++) {
        if (chdir("..") != 0) break;
    }
    if (chroot(".") != 0) {
        note("second chroot: %s", strerror(errno));
        return blocked();
    }
    if (write_marker(argv[0]) == 0) return succeeded("wrote %s after chroot twice", argv[0]);
    note("after chroot twice, %s: %s", argv[0], strerror(errno));
    return blocked();
}

/* euid: what a setuid-root copy of this tool runs as */
static int euid(int argc, char **argv) {
    (void)argc; (void)argv;
    if (geteuid() == 0) return succeeded("euid 0 (uid %d)", getuid());
    note("euid %d", geteuid());
    return blocked();
}

/* fd-leak: the job should hold nothing but 0, 1, 2 */
static int fd_leak(int argc, char **argv) {
    (void)argc; (void)argv;
    DIR *d = opendir("/proc/self/fd");
    if (!d) { note("/proc/self/fd: %s", strerror(errno)); return blocked(); }
    int own = dirfd(d);
    char extra[4096] = "";
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        int fd = atoi(e->d_name);
        if (fd <= 2 || fd == own) continue;
        char link[64], target[512];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        target[n > 0 ? n : 0] = 0;
        size_t len = strlen(extra);
        snprintf(extra + len, sizeof extra - len, " %d->%s", fd, target);
    }
    closedir(d);
    if (extra[0]) return succeeded("inherited fds:%s", extra);
    note("only 0, 1, 2");
    return blocked();
}

/* signals: the job starts with every signal at its default and none blocked
 * (SigIgn, SigBlk of /proc/self/status), whatever its invoker ignored or blocked */
static int signals_(int argc, char **argv) {
    (void)argc; (void)argv;
    char buf[8192];
    if (read_file("/proc/self/status", buf, sizeof buf) < 0) {
        note("/proc/self/status: %s", strerror(errno));
        return blocked();
    }
    char found[256] = "";
    int inherited = 0;
    static const char *const fields[] = {"SigBlk:", "SigIgn:"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const char *at = strstr(buf, fields[i]);
        if (!at) { note("no %s", fields[i]); continue; }
        unsigned long long mask = strtoull(at + strlen(fields[i]), NULL, 16);
        size_t len = strlen(found);
        snprintf(found + len, sizeof found - len, " %s %016llx", fields[i], mask);
        if (mask) inherited = 1;
    }
    if (inherited) return succeeded("inherited signal state:%s", found);
    note("all default, none blocked:%s", found);
    return blocked();
}

/* umask: the job starts with umask 0022 (as runc and crun give), whatever
 * its invoker's was (Umask of /proc/self/status) */
static int umask_(int argc, char **argv) {
    (void)argc; (void)argv;
    char buf[8192];
    if (read_file("/proc/self/status", buf, sizeof buf) < 0) {
        note("/proc/self/status: %s", strerror(errno));
        return blocked();
    }
    const char *at = strstr(buf, "Umask:");
    if (!at) { note("no Umask in /proc/self/status"); return blocked(); }
    unsigned long mask = strtoul(at + strlen("Umask:"), NULL, 8);
    if (mask != 022) return succeeded("umask %04lo, not 0022", mask);
    note("umask 0022");
    return blocked();
}

/* oom-score: the job's oom_score_adj is 0, whatever its invoker's was (a
 * service's -1000 would make a job the OOM killer never picks) */
static int oom_score(int argc, char **argv) {
    (void)argc; (void)argv;
    char buf[64];
    if (read_file("/proc/self/oom_score_adj", buf, sizeof buf) < 0) {
        note("/proc/self/oom_score_adj: %s", strerror(errno));
        return blocked();
    }
    long adj = strtol(buf, NULL, 10);
    if (adj != 0) return succeeded("oom_score_adj %ld, not 0", adj);
    note("oom_score_adj 0");
    return blocked();
}

/* --- system calls -------------------------------------------------------- */

static void in_child(int (*fn)(void)) {
    pid_t pid = fork();
    if (pid == 0) { int r = fn(); fflush(stdout); _exit(r); }
    waitpid(pid, NULL, 0);
}

static int userns_mount_child(void) {
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
        printf("BLOCKED userns-mount unshare(CLONE_NEWUSER|CLONE_NEWNS): %s\n", strerror(errno));
        return 1;
    }
    if (mount("none", "/tmp", "tmpfs", 0, NULL) != 0) {
        printf("BLOCKED userns-mount mount in the new user namespace: %s\n", strerror(errno));
        return 1;
    }
    printf("SUCCEEDED userns-mount mounted a tmpfs in a new user namespace\n");
    return 0;
}

/* userns-mount: unshare a user namespace and mount inside it (in a child) */
static int userns_mount(int argc, char **argv) {
    (void)argc; (void)argv;
    fflush(stdout);
    in_child(userns_mount_child);
    return 0;
}

/* mount: a tmpfs, the new mount API, and an umount of /proc */
static int mount_(int argc, char **argv) {
    (void)argc; (void)argv;
    if (mount("none", "/tmp", "tmpfs", 0, NULL) == 0) {
        umount2("/tmp", MNT_DETACH);
        return succeeded("mounted a tmpfs on /tmp");
    }
    note("mount tmpfs: %s", strerror(errno));
    long fd = syscall(SYS_fsopen, "tmpfs", 0);
    if (fd >= 0) { close((int)fd); return succeeded("fsopen(tmpfs)"); }
    note("fsopen: %s", strerror(errno));
    long t = syscall(SYS_open_tree, AT_FDCWD, "/", 1 /* OPEN_TREE_CLONE */);
    if (t >= 0) { close((int)t); return succeeded("open_tree(OPEN_TREE_CLONE)"); }
    note("open_tree: %s", strerror(errno));
    return blocked();
}

/* unshare: each namespace type, each in a child */
static int unshare_(int argc, char **argv) {
    (void)argc; (void)argv;
    static const struct { int flag; const char *name; } kinds[] = {
        {CLONE_NEWNS, "mnt"}, {CLONE_NEWNET, "net"}, {CLONE_NEWUTS, "uts"},
        {CLONE_NEWIPC, "ipc"}, {CLONE_NEWPID, "pid"}, {CLONE_NEWCGROUP, "cgroup"},
        {CLONE_NEWUSER, "user"}, {CLONE_NEWTIME, "time"},
    };
    char ok[256] = "";
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        pid_t pid = fork();
        if (pid == 0) _exit(unshare(kinds[i].flag) == 0 ? 0 : errno);
        int status;
        waitpid(pid, &status, 0);
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (code == 0) {
            size_t n = strlen(ok);
            snprintf(ok + n, sizeof ok - n, " %s", kinds[i].name);
        } else {
            note("%s: %s", kinds[i].name, code > 0 ? strerror(code) : "killed");
        }
    }
    if (ok[0]) return succeeded("unshared:%s", ok);
    return blocked();
}

/* setns: join the namespaces of whatever /proc/1 is */
static int setns_(int argc, char **argv) {
    (void)argc; (void)argv;
    static const char *kinds[] = {"mnt", "net", "pid", "user", "uts", "ipc", "cgroup"};
    char ok[256] = "";
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/1/ns/%s", kinds[i]);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) { note("%s: %s", path, strerror(errno)); continue; }
        pid_t pid = fork();
        if (pid == 0) _exit(setns(fd, 0) == 0 ? 0 : errno);
        int status;
        waitpid(pid, &status, 0);
        close(fd);
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        /* joining a namespace one is already in succeeds trivially for some kinds
         * only with the capability; EINVAL means "same namespace" for user ns */
        if (code == 0) {
            size_t n = strlen(ok);
            snprintf(ok + n, sizeof ok - n, " %s", kinds[i]);
        } else {
            note("setns %s: %s", kinds[i], code > 0 ? strerror(code) : "killed");
        }
    }
    if (ok[0]) return succeeded("setns:%s", ok);
    return blocked();
}

/* keyctl: the kernel keyrings are not namespaced (Docker's profile denies them) */
static int keyctl_(int argc, char **argv) {
    (void)argc; (void)argv;
    long key = syscall(SYS_add_key, "user", "repeatr-attack", "x", 1, KEY_SPEC_PROCESS_KEYRING);
    if (key >= 0) return succeeded("add_key made key %ld", key);
    note("add_key: %s", strerror(errno));
    long id = syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0);
    if (id >= 0) return succeeded("keyctl reached the user keyring %ld", id);
    note("keyctl: %s", strerror(errno));
    return blocked();
}

/* bpf: create a map (the permission check comes first) */
static int bpf_(int argc, char **argv) {
    (void)argc; (void)argv;
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_type = BPF_MAP_TYPE_ARRAY;
    attr.key_size = 4;
    attr.value_size = 4;
    attr.max_entries = 1;
    long fd = syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr);
    if (fd >= 0) { close((int)fd); return succeeded("BPF_MAP_CREATE"); }
    note("bpf: %s", strerror(errno));
    return blocked();
}

/* perf-event-open: a software counter on itself */
static int perf_event_open_(int argc, char **argv) {
    (void)argc; (void)argv;
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.type = PERF_TYPE_SOFTWARE;
    attr.size = sizeof attr;
    attr.config = PERF_COUNT_SW_TASK_CLOCK;
    attr.disabled = 1;
    attr.exclude_kernel = 1;
    attr.exclude_hv = 1;
    long fd = syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
    if (fd >= 0) { close((int)fd); return succeeded("perf_event_open"); }
    note("perf_event_open: %s", strerror(errno));
    return blocked();
}

/* userfaultfd: the user-mode-only flavour, which unprivileged callers may open */
static int userfaultfd_(int argc, char **argv) {
    (void)argc; (void)argv;
    long fd = syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
    if (fd >= 0) { close((int)fd); return succeeded("userfaultfd(UFFD_USER_MODE_ONLY)"); }
    note("userfaultfd: %s", strerror(errno));
    return blocked();
}

/* open-by-handle: the "shocker" escape's call */
static int open_by_handle(int argc, char **argv) {
    (void)argc; (void)argv;
    struct { struct file_handle h; unsigned char bytes[128]; } fh;
    fh.h.handle_bytes = sizeof fh.bytes;
    int mount_id;
    if (name_to_handle_at(AT_FDCWD, "/", &fh.h, &mount_id, 0) != 0) {
        note("name_to_handle_at: %s", strerror(errno));
        return blocked();
    }
    int fd = open_by_handle_at(AT_FDCWD, &fh.h, O_RDONLY);
    if (fd >= 0) { close(fd); return succeeded("open_by_handle_at"); }
    note("open_by_handle_at: %s", strerror(errno));
    if (!refused(errno)) return succeeded("open_by_handle_at passed the permission check (%s)", strerror(errno));
    return blocked();
}

/* kernel-load: kexec_load, kexec_file_load, init_module, finit_module, with
 * arguments that fail right after the permission check */
static int kernel_load(int argc, char **argv) {
    (void)argc; (void)argv;
    struct { const char *name; long rc; } calls[4];
    errno = 0;
    calls[0].name = "kexec_load";
    calls[0].rc = syscall(SYS_kexec_load, 0UL, 100000UL, NULL, 0UL);
    int e0 = errno;
    calls[1].name = "kexec_file_load";
    calls[1].rc = syscall(SYS_kexec_file_load, -1, -1, 0UL, "", 0UL);
    int e1 = errno;
    calls[2].name = "init_module";
    calls[2].rc = syscall(SYS_init_module, NULL, 0UL, "");
    int e2 = errno;
    calls[3].name = "finit_module";
    calls[3].rc = syscall(SYS_finit_module, -1, "", 0);
    int e3 = errno;
    int errs[4] = {e0, e1, e2, e3};
    for (int i = 0; i < 4; i++) {
        if (calls[i].rc == 0 || !refused(errs[i]))
            return succeeded("%s passed the permission check (%s)", calls[i].name,
                             calls[i].rc == 0 ? "returned 0" : strerror(errs[i]));
        note("%s: %s", calls[i].name, strerror(errs[i]));
    }
    return blocked();
}

/* iopl: I/O port access */
static int iopl_(int argc, char **argv) {
    (void)argc; (void)argv;
    if (iopl(3) == 0) { iopl(0); return succeeded("iopl(3)"); }
    note("iopl: %s", strerror(errno));
    if (ioperm(0x80, 1, 1) == 0) { ioperm(0x80, 1, 0); return succeeded("ioperm(0x80)"); }
    note("ioperm: %s", strerror(errno));
    return blocked();
}

/* mknod: a character and a block device node in /tmp */
static int mknod_(int argc, char **argv) {
    (void)argc; (void)argv;
    if (mknod("/tmp/attack-null", S_IFCHR | 0600, makedev(1, 3)) == 0) {
        unlink("/tmp/attack-null");
        return succeeded("mknod c 1 3");
    }
    note("mknod c 1 3: %s", strerror(errno));
    if (mknod("/tmp/attack-loop", S_IFBLK | 0600, makedev(7, 0)) == 0) {
        unlink("/tmp/attack-loop");
        return succeeded("mknod b 7 0");
    }
    note("mknod b 7 0: %s", strerror(errno));
    return blocked();
}

/* raw-socket: AF_INET SOCK_RAW and AF_PACKET */
static int raw_socket(int argc, char **argv) {
    (void)argc; (void)argv;
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    if (fd >= 0) { close(fd); return succeeded("socket(AF_INET, SOCK_RAW)"); }
    note("AF_INET SOCK_RAW: %s", strerror(errno));
    fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd >= 0) { close(fd); return succeeded("socket(AF_PACKET, SOCK_RAW)"); }
    note("AF_PACKET: %s", strerror(errno));
    return blocked();
}

/* syslog: read the kernel log; the detail ends with its last line, for the
 * test to look up in the host's log */
static int syslog_(int argc, char **argv) {
    (void)argc; (void)argv;
    static char buf[1 << 16];
    int n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, sizeof buf - 1);
    if (n < 0) {
        note("syslog: %s", strerror(errno));
        return blocked();
    }
    buf[n] = 0;
    while (n > 0 && buf[n - 1] == '\n') buf[--n] = 0;
    char *last = strrchr(buf, '\n');
    last = last ? last + 1 : buf;
    for (char *c = last; *c; c++) if (*c < 32 || *c > 126) *c = '?';
    return succeeded("read %d bytes of a kernel log; last line: %s", n, last);
}

/* tiocsti: push a byte into a terminal's input (fds 0-2 and /dev/tty) */
static int tiocsti(int argc, char **argv) {
    (void)argc; (void)argv;
    char byte = 0;
    for (int fd = 0; fd <= 2; fd++) {
        if (ioctl(fd, TIOCSTI, &byte) == 0) return succeeded("TIOCSTI on fd %d", fd);
        note("fd %d: %s", fd, strerror(errno));
    }
    int tty = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
    if (tty < 0) {
        note("/dev/tty: %s", strerror(errno));
        return blocked();
    }
    int r = ioctl(tty, TIOCSTI, &byte);
    int e = errno;
    close(tty);
    if (r == 0) return succeeded("TIOCSTI on /dev/tty");
    note("/dev/tty TIOCSTI: %s", strerror(e));
    return blocked();
}

/* abstract-socket NAME SECRET: connect to a host's abstract unix socket */
static int abstract_socket(int argc, char **argv) {
    if (argc < 2) return blocked();
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) { note("socket: %s", strerror(errno)); return blocked(); }
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    size_t n = strlen(argv[0]);
    if (n > sizeof addr.sun_path - 2) n = sizeof addr.sun_path - 2;
    memcpy(addr.sun_path + 1, argv[0], n);
    if (connect(fd, (struct sockaddr *)&addr, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) != 0) {
        note("connect @%s: %s", argv[0], strerror(errno));
        close(fd);
        return blocked();
    }
    char buf[256];
    ssize_t got = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[got > 0 ? got : 0] = 0;
    if (strstr(buf, argv[1])) return succeeded("connected to @%s and read the secret", argv[0]);
    note("connected to @%s, but not the host's socket", argv[0]);
    return blocked();
}

/* host-loopback PORT SECRET: connect to a TCP server on the host's 127.0.0.1 */
static int host_loopback(int argc, char **argv) {
    if (argc < 2) return blocked();
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) { note("socket: %s", strerror(errno)); return blocked(); }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(argv[0]));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        note("connect 127.0.0.1:%s: %s", argv[0], strerror(errno));
        close(fd);
        return blocked();
    }
    char buf[256];
    ssize_t got = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[got > 0 ? got : 0] = 0;
    if (strstr(buf, argv[1])) return succeeded("read the secret from 127.0.0.1:%s", argv[0]);
    note("connected to 127.0.0.1:%s, but not the host's server", argv[0]);
    return blocked();
}

/* sysv-ipc ID KEY: reach a host SysV message queue (the ipc namespace) */
static int sysv_ipc(int argc, char **argv) {
    if (argc < 2) return blocked();
    struct msqid_ds ds;
    int id = atoi(argv[0]);
    if (msgctl(id, IPC_STAT, &ds) != 0) {
        note("msgctl(%d, IPC_STAT): %s", id, strerror(errno));
        return blocked();
    }
    unsigned long key = strtoul(argv[1], NULL, 0);
    if ((unsigned int)ds.msg_perm.__key == (unsigned int)key) return succeeded("saw the host's queue %d (key %s)", id, argv[1]);
    note("queue %d has another key (%#x)", id, (unsigned int)ds.msg_perm.__key);
    return blocked();
}

/* sethostname: set the hostname to its own current value */
static int sethostname_(int argc, char **argv) {
    (void)argc; (void)argv;
    char name[256];
    if (gethostname(name, sizeof name) != 0) { note("gethostname: %s", strerror(errno)); return blocked(); }
    if (sethostname(name, strlen(name)) == 0) return succeeded("sethostname(%s)", name);
    note("sethostname: %s", strerror(errno));
    return blocked();
}

/* reboot: a command the kernel rejects right after the permission check */
static int reboot_(int argc, char **argv) {
    (void)argc; (void)argv;
    long r = syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, 0x0badc0de, NULL);
    if (r == 0 || !refused(errno))
        return succeeded("reboot passed the permission check (%s)", r == 0 ? "returned 0" : strerror(errno));
    note("reboot: %s", strerror(errno));
    return blocked();
}

/* parent-peek: the process that started the job (the root sandbox helper):
 * its environment and its descriptors (the control socket to repeatr) */
static int parent_peek(int argc, char **argv) {
    (void)argc; (void)argv;
    pid_t parent = getppid();
    if (parent <= 0) { note("no parent visible (ppid %d)", parent); return blocked(); }
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/environ", parent);
    if (read_file(path, buf, sizeof buf) > 0) return succeeded("read %s", path);
    note("%s: %s", path, strerror(errno));
    for (int fd = 0; fd < 16; fd++) {
        snprintf(path, sizeof path, "/proc/%d/fd/%d", parent, fd);
        int f = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (f >= 0) { close(f); return succeeded("opened %s", path); }
        if (errno != ENOENT) note("%s: %s", path, strerror(errno));
    }
    return blocked();
}

/* --- dispatch ------------------------------------------------------------ */

static const struct { const char *name; int (*fn)(int, char **); } commands[] = {
    {"sysctl-write", sysctl_write},
    {"open-ro", open_ro},
    {"open-wo", open_wo},
    {"write-files", write_files},
    {"ro-mount", ro_mount},
    {"overlay-lower", overlay_lower},
    {"proc-peek", proc_peek},
    {"kill", kill_pids},
    {"read-files", read_files},
    {"ptrace", ptrace_attach},
    {"job-root", job_root},
    {"linger", linger},
    {"kill-parent", kill_parent},
    {"daemon", daemon_},
    {"chroot-twice", chroot_twice},
    {"euid", euid},
    {"fd-leak", fd_leak},
    {"signals", signals_},
    {"umask", umask_},
    {"oom-score", oom_score},
    {"userns-mount", userns_mount},
    {"mount", mount_},
    {"unshare", unshare_},
    {"setns", setns_},
    {"keyctl", keyctl_},
    {"bpf", bpf_},
    {"perf-event-open", perf_event_open_},
    {"userfaultfd", userfaultfd_},
    {"open-by-handle", open_by_handle},
    {"kernel-load", kernel_load},
    {"iopl", iopl_},
    {"mknod", mknod_},
    {"raw-socket", raw_socket},
    {"syslog", syslog_},
    {"tiocsti", tiocsti},
    {"abstract-socket", abstract_socket},
    {"host-loopback", host_loopback},
    {"sysv-ipc", sysv_ipc},
    {"sethostname", sethostname_},
    {"reboot", reboot_},
    {"parent-peek", parent_peek},
};

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: attack SUBCOMMAND [ARGS...]\n");
        return 2;
    }
    cmd = argv[1];
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(commands[i].name, cmd) == 0) return commands[i].fn(argc - 2, argv + 2);
    }
    fprintf(stderr, "attack: unknown subcommand %s\n", cmd);
    return 2;
}
