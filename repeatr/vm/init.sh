#!/bin/sh
# The guest's /init (repeatr.vm.guest): busybox sh, PID 1 until it execs the
# job runner (runner.c). Mounts, modules, the shared root, the job's /dev
# (its /proc is the runner's: mounted from the job's pid namespace),
# hostname, limits and network, then "booted" on the status port.
# A failure before that says why on the status port ("fail ...") and powers
# off; the host gives up at its boot deadline anyway.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
status=
fail() {
    if [ -n "$status" ]; then echo "fail $*" >"$status"; else echo "repeatr-vm: $*" >/dev/console; fi
    poweroff -f
}
while read -r module; do
    insmod "/modules/$module" || fail "insmod $module"
done </modules/order
# The ports appear some time after the driver loads.
n=0
while :; do
    for p in /sys/class/virtio-ports/*; do
        [ -r "$p/name" ] || continue
        read -r name <"$p/name"
        case "$name" in
            repeatr.status) status=/dev/${p##*/} ;;
            repeatr.stdout) stdout=/dev/${p##*/} ;;
            repeatr.stderr) stderr=/dev/${p##*/} ;;
        esac
    done
    [ -n "$status" ] && [ -n "$stdout" ] && [ -n "$stderr" ] && [ -e "$status" ] && [ -e "$stdout" ] && [ -e "$stderr" ] && break
    n=$((n + 1))
    [ $n -gt 2000 ] && fail "the virtio ports did not appear"
    usleep 5000
done
exec 3>"$status"
status=/proc/self/fd/3
mkdir -p /newroot
mount -t virtiofs -o nosuid,nodev root /newroot || fail "mount the shared root"
read -r mounts </job/mounts
for m in $mounts; do
    case "$m" in
        dev:*)
            d=/newroot${m#dev:}
            # nodev, with the few devices bound from the guest's devtmpfs, as on
            # ns: a node the job makes (CAP_MKNOD) opens nothing.
            mount -t tmpfs -o nosuid,nodev,noexec,mode=755,size=64k tmpfs "$d" || fail "mount /dev on $d"
            for n in null zero full random urandom tty; do
                : >"$d/$n" && mount --bind "/dev/$n" "$d/$n" || fail "bind /dev/$n"
            done
            mkdir "$d/pts" "$d/shm" "$d/mqueue"
            mount -t devpts -o nosuid,noexec,newinstance,ptmxmode=0666,mode=0620 devpts "$d/pts"
            ln -s pts/ptmx "$d/ptmx"
            mount -t tmpfs -o nosuid,noexec,nodev,mode=1777,size=65536k shm "$d/shm"
            mount -t mqueue -o nosuid,noexec,nodev mqueue "$d/mqueue"
            ln -s /proc/self/fd "$d/fd"
            ln -s /proc/self/fd/0 "$d/stdin"
            ln -s /proc/self/fd/1 "$d/stdout"
            ln -s /proc/self/fd/2 "$d/stderr"
            ;;
    esac
done
[ -s /job/hostname ] && hostname "$(cat /job/hostname)"
ip link set lo up
# Unprivileged ping, as repeatr.net sets it in every network namespace it makes.
echo "0 2147483647" >/proc/sys/net/ipv4/ping_group_range
if [ -s /job/net ]; then
    # address/prefix gateway
    read -r addr gateway </job/net
    ip link set eth0 up && ip addr add "$addr" dev eth0 && ip route add default via "$gateway" || fail "network"
fi
: >/job/cgroup
if [ -s /job/limits ]; then
    mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "mount cgroup2"
    echo "+memory +pids +cpu" >/sys/fs/cgroup/cgroup.subtree_control
    mkdir /sys/fs/cgroup/job
    while read -r file value; do
        echo "$value" >"/sys/fs/cgroup/job/$file" || fail "limit $file"
    done </job/limits
    echo /sys/fs/cgroup/job >/job/cgroup
fi
echo booted >&3
exec /bin/runner <"/dev/null" >"$stdout" 2>"$stderr"
