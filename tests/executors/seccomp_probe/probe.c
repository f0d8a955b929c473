/* Make raw system calls through each x86 ABI and print how each ended.
 *
 * usage: probe ABI:NR[:ARG0] ...   ABI is 64 (syscall), 32 (int 0x80: the
 * i386 table, seen by seccomp as AUDIT_ARCH_I386) or x32 (NR | 0x40000000).
 * Prints one line per call: "ok" or the errno's name (EPERM, ENOSYS...).
 * Only calls that are harmless to a contained job are made by the tests.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static long int80(long nr, long arg0) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(arg0), "c"(0), "d"(0) : "memory");
    return ret;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char *abi = strtok(argv[i], ":");
        char *nr_s = strtok(NULL, ":");
        char *arg_s = strtok(NULL, ":");
        if (!abi || !nr_s) return 2;
        long nr = strtol(nr_s, NULL, 0), arg0 = arg_s ? strtol(arg_s, NULL, 0) : -1;
        long ret;
        int err = 0;
        if (strcmp(abi, "32") == 0) {
            ret = int80(nr, arg0);
            if (ret < 0 && ret > -4096) err = (int)-ret;
        } else {
            if (strcmp(abi, "x32") == 0) nr |= 0x40000000L;
            errno = 0;
            ret = syscall(nr, arg0, 0, 0, 0, 0, 0);
            if (ret == -1) err = errno;
        }
        printf("%s\n", err ? strerrorname_np(err) : "ok");
    }
    return 0;
}
