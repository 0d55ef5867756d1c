#!/bin/sh
# netns-agent.sh — Open MPI's rsh agent for the multi-host tests in tests/multihost/.
#
# mpirun starts its remote daemons with `AGENT HOST COMMAND...`, as it would with ssh. Here a
# "host" is a network namespace of this machine: the agent looks HOST up in $SL_MH_HOSTS
# ("hostA=NETNS_A hostB=NETNS_B"), enters that namespace (ip netns exec) and a new UTS
# namespace whose host name is HOST (unshare --uts; hostname HOST), then runs COMMAND with
# sh -c, the way sshd hands a remote command to the login shell. So every rank started on a
# host sees that host's name and reaches the other host only over the veth pair between the
# namespaces.
#
# Use:  mpirun --mca plm_rsh_agent /path/to/netns-agent.sh --mca plm_rsh_no_tree_spawn 1 ...
# Optional: SL_MH_AGENT_LOG=FILE appends one line per launch (host and command).
set -u
if [ $# -lt 2 ]; then
    echo "netns-agent: usage: netns-agent.sh HOST COMMAND..." >&2
    exit 255
fi
host=$1
shift
ns=
for pair in ${SL_MH_HOSTS:-}; do
    case $pair in
        "$host="*) ns=${pair#*=} ;;
    esac
done
if [ -z "$ns" ]; then
    echo "netns-agent: unknown host '$host' (SL_MH_HOSTS='${SL_MH_HOSTS:-}')" >&2
    exit 255
fi
if [ -n "${SL_MH_AGENT_LOG:-}" ]; then
    printf '%s -> %s: %s\n' "$host" "$ns" "$*" >>"$SL_MH_AGENT_LOG"
fi
exec ip netns exec "$ns" unshare --uts sh -c 'hostname "$1" && exec sh -c "$2"' netns-agent "$host" "$*"
