#!/bin/sh
# docker/worker-entrypoint.sh - makes the container's cgroup usable by codeq-worker, then
# execs it with the container's arguments (its flags: `--help`, `--worker-id w1`, ...).
#
# codeq creates one child cgroup per sandbox (sandbox/cgroup.c). In a container two things
# stand in the way, and both are fixed here rather than in the C code because they are
# properties of the container, not of codeq:
#
#  1. Docker mounts /sys/fs/cgroup read-only unless the container is privileged. A bind
#     remount clears the read-only flag of this container's mount only (its view is its own
#     cgroup subtree: compose.yaml gives it a private cgroup namespace). Needs CAP_SYS_ADMIN
#     and no AppArmor `deny mount` (compose.yaml: cap_add SYS_ADMIN, apparmor=unconfined).
#
#  2. cgroup v2 lets a cgroup enable controllers for its children only while it holds no
#     processes, except the real root. Inside a private cgroup namespace the container's
#     cgroup looks like the root ("0::/" in /proc/self/cgroup), and codeq treats it as
#     one, but it is not: enabling memory, pids and cpu there fails with EBUSY while the
#     worker is in it. So the container's processes move to a leaf first, then the
#     controllers are enabled; codeq-worker starts in that leaf, which it handles itself
#     (it moves to a leaf of its own and creates codeq/<sandbox> next to it).
set -eu

cgroot=/sys/fs/cgroup
leaf=$cgroot/codeq-worker

die() {
    echo "worker-entrypoint: $*" >&2
    exit 1
}

case " $* " in
*" --help "* | *" -h "*) exec /usr/local/bin/codeq-worker "$@" ;;
esac

# 1. Every cgroup mount that is read-only (one on v2; one per controller on v1).
# mountinfo: field 5 is the mount point, 6 its options; the file system type follows "-".
ro_mounts=$(awk '{
    for (i = 7; i <= NF; i++)
        if ($i == "-") {
            if (($(i + 1) == "cgroup" || $(i + 1) == "cgroup2") && $6 ~ /(^|,)ro(,|$)/)
                print $5
            break
        }
}' /proc/self/mountinfo)
for mnt in $ro_mounts; do
    mount -o remount,bind,rw "$mnt" ||
        die "cannot make $mnt writable; the worker container needs cap_add SYS_ADMIN and" \
            "security_opt apparmor=unconfined (docker/README.md)"
done

# 2. cgroup v2, at the root of a cgroup namespace: leave the root, then delegate.
if [ -f "$cgroot/cgroup.controllers" ] && [ "$(cat /proc/self/cgroup)" = "0::/" ]; then
    mkdir -p "$leaf"
    echo $$ >"$leaf/cgroup.procs" || die "cannot move into $leaf"
    # Anything else still in the root (nothing, normally, this early).
    for pid in $(cat "$cgroot/cgroup.procs"); do
        echo "$pid" >"$leaf/cgroup.procs" 2>/dev/null || true
    done
    echo "+memory +pids +cpu" >"$cgroot/cgroup.subtree_control" ||
        die "cannot enable the memory, pids and cpu controllers in this container's cgroup" \
            "(it offers: $(cat "$cgroot/cgroup.controllers"))"
fi

exec /usr/local/bin/codeq-worker "$@"
