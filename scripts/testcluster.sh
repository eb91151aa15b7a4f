#!/usr/bin/env bash
# A throwaway test cluster on loopback, as root: a real OpenSSH server (own config, generated host
# and user keys, a non-default port) and a real one-node SLURM (munge, slurmctld, slurmd, short
# MinJobAge so finished jobs leave the queue quickly), and a real one-node Grid Engine (Debian's
# gridengine 8.1.9: sge_qmaster and sge_execd as root, queue all.q, parallel environment smp).
#
#   scripts/testcluster.sh up      # idempotent; writes $STATE/env for the tests
#   scripts/testcluster.sh down    # stops what `up` started
#   scripts/testcluster.sh status
#
# The compute side is cut off from Z's network as on a real cluster that cannot reach XNAT: slurmd
# (so every SLURM job) and a second sshd (alias x2c-test-y) run in the network namespace x2cy,
# joined to this machine by a veth pair only (Z 10.231.0.1, Y 10.231.0.2): Z's loopback, where
# XNAT listens, does not exist there. Where namespaces are refused (`ip netns add` fails) the
# compute side stays on loopback and $STATE/env says X2C_TEST_NETNS=0 (the tests report it; under
# CI=true they fail on it). The login node x2c-test (sshd on 127.0.0.1) and Grid Engine stay on
# loopback.
#
# STATE defaults to /tmp/x2c-testcluster (override with X2C_TESTCLUSTER_DIR). The tests read
# $STATE/env: the ssh_config and known_hosts to use and the alias of the cluster's login node.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${X2C_TESTCLUSTER_DIR:-/tmp/x2c-testcluster}
SSH_PORT=${X2C_TEST_SSH_PORT:-2222}
SLURM_CONF=/etc/slurm/slurm.conf
MARK="# x2c-testcluster"
NODE=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))

NS=x2cy
Z_ADDR=10.231.0.1
Y_ADDR=10.231.0.2

netns_up() { ip netns list 2>/dev/null | grep -qw "$NS"; }

up_netns() {  # the namespace and its veth pair; sets NETNS=1, or 0 where namespaces are refused
  NETNS=1
  if ! netns_up; then
    if ! ip netns add "$NS" 2>"$STATE/netns.log"; then
      NETNS=0
      echo "testcluster: network namespaces refused ($(head -1 "$STATE/netns.log")): the compute side stays on loopback (X2C_TEST_NETNS=0)"
      return 0
    fi
  fi
  ip link show x2c-z >/dev/null 2>&1 || ip link add x2c-z type veth peer name x2c-y netns "$NS"
  ip addr replace "$Z_ADDR/30" dev x2c-z
  ip link set x2c-z up
  ip netns exec "$NS" ip addr replace "$Y_ADDR/30" dev x2c-y
  ip netns exec "$NS" ip link set x2c-y up
  ip netns exec "$NS" ip link set lo up
}

# on the compute side: nsenter switches the network namespace only (`ip netns exec` also mounts
# a sysfs of its own, which hides /sys/fs/cgroup from slurmd)
in_y() { if [ "$NETNS" = 1 ]; then nsenter --net="/run/netns/$NS" "$@"; else "$@"; fi; }
y_addr() { if [ "$NETNS" = 1 ]; then echo "$Y_ADDR"; else echo 127.0.0.1; fi; }
z_addr() { if [ "$NETNS" = 1 ]; then echo "$Z_ADDR"; else echo 127.0.0.1; fi; }

need_root() { [ "$(id -u)" = 0 ] || { echo "testcluster: run as root (it starts sshd, munged, slurmctld)"; exit 1; }; }

ensure_packages() {
  local missing=()
  for p in iproute2 openssh-server openssh-client slurm-wlm munge gridengine-master gridengine-exec gridengine-client; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    sge_preseed
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

wait_for() {  # wait_for DESCRIPTION COMMAND...: poll a readiness check, up to 30 s
  local what=$1; shift
  for _ in $(seq 1 150); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "testcluster: $what did not come up; see $STATE/*.log"; exit 1
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }  # running PIDFILE

ssh_host() {  # ssh_host ALIAS ADDRESS: an ssh_config entry for the cluster's sshd at ADDRESS
  printf 'Host %s\n  HostName %s\n  Port %s\n  User root\n  IdentityFile %s\n' \
    "$1" "$2" "$SSH_PORT" "$STATE/ssh/id_ed25519"
  printf '  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n  BatchMode yes\n' \
    "$STATE/ssh/known_hosts"
}

up_ssh() {
  mkdir -p "$STATE/ssh" /run/sshd
  chmod 700 "$STATE/ssh"
  [ -f "$STATE/ssh/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$STATE/ssh/host_ed25519"
  [ -f "$STATE/ssh/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$STATE/ssh/id_ed25519"
  cp "$STATE/ssh/id_ed25519.pub" "$STATE/ssh/authorized_keys"
  chmod 600 "$STATE/ssh/authorized_keys"
  cat > "$STATE/ssh/sshd_config" <<CONF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $STATE/ssh/host_ed25519
AuthorizedKeysFile $STATE/ssh/authorized_keys
PidFile $STATE/ssh/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
LogLevel VERBOSE
CONF
  sed -e "s/^ListenAddress .*/ListenAddress $(y_addr)/" -e "s|^PidFile .*|PidFile $STATE/ssh/sshd-y.pid|" \
    "$STATE/ssh/sshd_config" > "$STATE/ssh/sshd_config_y"
  local key
  key=$(cut -d' ' -f1,2 "$STATE/ssh/host_ed25519.pub")
  printf '[127.0.0.1]:%s %s\n[%s]:%s %s\n' "$SSH_PORT" "$key" "$Y_ADDR" "$SSH_PORT" "$key" > "$STATE/ssh/known_hosts"
  {
    ssh_host x2c-test 127.0.0.1       # the login node
    ssh_host x2c-test-y "$(y_addr)"   # the compute side
  } > "$STATE/ssh/ssh_config"
  if ! running "$STATE/ssh/sshd.pid"; then
    /usr/sbin/sshd -f "$STATE/ssh/sshd_config" -E "$STATE/sshd.log"
  fi
  wait_for "sshd on 127.0.0.1:$SSH_PORT" ssh -F "$STATE/ssh/ssh_config" x2c-test true
  if [ "$NETNS" = 1 ] && ! running "$STATE/ssh/sshd-y.pid"; then
    in_y /usr/sbin/sshd -f "$STATE/ssh/sshd_config_y" -E "$STATE/sshd-y.log"
  fi
  wait_for "sshd on $(y_addr):$SSH_PORT" ssh -F "$STATE/ssh/ssh_config" x2c-test-y true
}

up_slurm() {
  mkdir -p "$STATE/slurm/state" "$STATE/slurm/spool" /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  [ -f /etc/munge/munge.key ] || mungekey -c -f -k /etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  if ! pgrep -x munged >/dev/null; then munged --force; fi
  wait_for munge sh -c 'munge -n | unmunge'

  if [ -f "$SLURM_CONF" ] && ! head -1 "$SLURM_CONF" | grep -q "$MARK"; then
    echo "testcluster: $SLURM_CONF exists and is not ours; refusing to overwrite it"; exit 1
  fi
  mkdir -p /etc/slurm
  cat > "$SLURM_CONF" <<CONF
$MARK (written by scripts/testcluster.sh; removed by 'down')
ClusterName=x2ctest
SlurmctldHost=$NODE($(z_addr))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/slurm/state
SlurmdSpoolDir=$STATE/slurm/spool
SlurmctldPidFile=$STATE/slurm/slurmctld.pid
SlurmdPidFile=$STATE/slurm/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=5
SchedulerParameters=sched_interval=1
MessageTimeout=30
KillWait=2
InactiveLimit=0
NodeName=$NODE NodeAddr=$(y_addr) CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
  if ! pgrep -x slurmctld >/dev/null; then slurmctld; fi
  if ! pgrep -x slurmd >/dev/null; then in_y slurmd; fi
  wait_for slurmctld scontrol ping
  wait_for "the SLURM node" sh -c "sinfo -h -N -o %t | grep -Eq '^(idle|mix|alloc)'"
}

# Grid Engine: Debian's packages create the cell (SGE_ROOT=/var/lib/gridengine, cell "default")
# when debconf is told to configure it automatically; the master is this host.
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
SGE_COMMON=$SGE_ROOT/$SGE_CELL/common

sge_preseed() {
  debconf-set-selections <<SEL
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginemaster string $(hostname -f)
SEL
}

# The daemons are found by name: execd names its spool directory after what 127.0.0.1 resolves
# to ("localhost"), not after the host, so its pid file is not where one would look.
sge_running() { pgrep -x "$1" >/dev/null; }

sge_apply() {  # sge_apply SHOW-ARGS ADD-FLAG FILE: add an object from FILE unless it exists
  local show=$1 add=$2 file=$3
  # shellcheck disable=SC2086
  qconf $show >/dev/null 2>&1 || qconf "$add" "$file" >/dev/null
}

up_sge() {
  [ -f "$SGE_COMMON/act_qmaster" ] || { echo "testcluster: no Grid Engine cell in $SGE_COMMON (reinstall gridengine-master with the debconf answers of sge_preseed)"; exit 1; }
  # 127.0.0.1 resolves back to "localhost", not to this host's name: without an alias qmaster
  # refuses every client ("access denied (client IP resolved to host name localhost ...)").
  if [ "$NODE" != localhost ]; then echo "$NODE localhost" > "$SGE_COMMON/host_aliases"; fi
  mkdir -p /var/run/gridengine "$STATE/sge"
  sge_running sge_qmaster || /usr/sbin/sge_qmaster
  wait_for sge_qmaster qconf -sh
  # Root may submit (min_uid/min_gid default to 1000); loads and scheduling every second; no
  # login shells (by default bash jobs run as "-bash" and source root's profile, which here
  # runs pyenv-rehash under a lock that concurrent jobs wait on; x2c's jobs start clean).
  qconf -sconf global \
    | sed -E -e 's/^(min_uid|min_gid)( +).*/\1\20/' -e 's/^(load_report_time +).*/\100:00:05/' \
      -e 's/^(login_shells +).*/\1none/' \
    > "$STATE/sge/global"
  qconf -Mconf "$STATE/sge/global" >/dev/null
  qconf -ssconf \
    | sed -E -e 's/^(schedule_interval +).*/\10:0:1/' -e 's/^(flush_(submit|finish)_sec +).*/\11/' \
    > "$STATE/sge/sched"
  qconf -Msconf "$STATE/sge/sched" >/dev/null
  qconf -as "$NODE" >/dev/null 2>&1 || true
  cat > "$STATE/sge/exechost" <<CONF
hostname              $NODE
load_scaling          NONE
complex_values        NONE
user_lists            NONE
xuser_lists           NONE
projects              NONE
xprojects             NONE
usage_scaling         NONE
report_variables      NONE
CONF
  sge_apply "-se $NODE" -Ae "$STATE/sge/exechost"
  cat > "$STATE/sge/smp" <<CONF
pe_name            smp
slots              $CPUS
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    \$pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
CONF
  sge_apply "-sp smp" -Ap "$STATE/sge/smp"
  printf 'group_name @allhosts\nhostlist %s\n' "$NODE" > "$STATE/sge/allhosts"
  sge_apply "-shgrp @allhosts" -Ahgrp "$STATE/sge/allhosts"
  qconf -sq \
    | sed -E -e 's/^(qname +).*/\1all.q/' -e 's/^(hostlist +).*/\1@allhosts/' \
      -e "s/^(slots +).*/\1$CPUS/" -e 's/^(pe_list +).*/\1smp/' -e 's|^(shell +).*|\1/bin/bash|' \
      -e 's/^(load_thresholds +).*/\1NONE/' \
    > "$STATE/sge/all.q"
  sge_apply "-sq all.q" -Aq "$STATE/sge/all.q"
  sge_running sge_execd || /usr/sbin/sge_execd
  # the host reports a load once its execd has registered with qmaster
  wait_for "the SGE execution host" sh -c "qhost -h $NODE | awk 'NR > 3 && \$4 != \"-\"' | grep -q ."
}

down_sge() {
  export SGE_ROOT SGE_CELL
  qdel -u root >/dev/null 2>&1 || true
  pkill -x sge_execd 2>/dev/null || true
  pkill -x sge_qmaster 2>/dev/null || true
  for _ in $(seq 1 150); do { sge_running sge_execd || sge_running sge_qmaster; } || break; sleep 0.2; done
}

write_env() {
  cat > "$STATE/env" <<ENV
X2C_TEST_SSH_CONFIG=$STATE/ssh/ssh_config
X2C_TEST_KNOWN_HOSTS=$STATE/ssh/known_hosts
X2C_TEST_SSH_ALIAS=x2c-test
X2C_TEST_COMPUTE_ALIAS=x2c-test-y
X2C_TEST_NETNS=$NETNS
X2C_TEST_SSH_PORT=$SSH_PORT
X2C_TEST_SSH_KEY=$STATE/ssh/id_ed25519
X2C_TEST_SSHD_CONFIG=$STATE/ssh/sshd_config
X2C_TEST_SLURM=1
X2C_TEST_SGE_ROOT=$SGE_ROOT
X2C_TEST_SGE_CELL=$SGE_CELL
ENV
}

down() {
  for pid in "$STATE/ssh/sshd.pid" "$STATE/ssh/sshd-y.pid"; do
    if [ -f "$pid" ]; then kill "$(cat "$pid")" 2>/dev/null || true; fi
  done
  scancel --user=root >/dev/null 2>&1 || true
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  for _ in $(seq 1 50); do { pgrep -x slurmctld || pgrep -x slurmd; } >/dev/null || break; sleep 0.1; done
  if [ -f "$SLURM_CONF" ] && head -1 "$SLURM_CONF" | grep -q "$MARK"; then rm -f "$SLURM_CONF"; fi
  down_sge
  ip link del x2c-z 2>/dev/null || true
  if netns_up; then ip netns del "$NS"; fi
  rm -f "$STATE/env"
}

case "${1:-}" in
  up) need_root; ensure_packages; mkdir -p "$STATE"; up_netns; up_ssh; up_slurm; up_sge; write_env; echo "testcluster: up ($STATE/env)";;
  down) need_root; down; echo "testcluster: down";;
  status) [ -f "$STATE/env" ] && cat "$STATE/env" && sinfo && qstat -f && exit 0; echo "testcluster: not up"; exit 1;;
  *) echo "usage: $0 up|down|status"; exit 2;;
esac
