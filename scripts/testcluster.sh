#!/usr/bin/env bash
# A throwaway test cluster on loopback, as root: a real OpenSSH server (own config, generated host
# and user keys, a non-default port) and a real one-node SLURM (munge, slurmctld, slurmd, short
# MinJobAge so finished jobs leave the queue quickly).
#
#   scripts/testcluster.sh up      # idempotent; writes $STATE/env for the tests
#   scripts/testcluster.sh down    # stops what `up` started
#   scripts/testcluster.sh status
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

need_root() { [ "$(id -u)" = 0 ] || { echo "testcluster: run as root (it starts sshd, munged, slurmctld)"; exit 1; }; }

ensure_packages() {
  local missing=()
  for p in openssh-server openssh-client slurm-wlm munge; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
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
  echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$STATE/ssh/host_ed25519.pub")" > "$STATE/ssh/known_hosts"
  cat > "$STATE/ssh/ssh_config" <<CONF
Host x2c-test
  HostName 127.0.0.1
  Port $SSH_PORT
  User root
  IdentityFile $STATE/ssh/id_ed25519
  UserKnownHostsFile $STATE/ssh/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
CONF
  if ! { [ -f "$STATE/ssh/sshd.pid" ] && kill -0 "$(cat "$STATE/ssh/sshd.pid")" 2>/dev/null; }; then
    /usr/sbin/sshd -f "$STATE/ssh/sshd_config" -E "$STATE/sshd.log"
  fi
  wait_for "sshd on 127.0.0.1:$SSH_PORT" ssh -F "$STATE/ssh/ssh_config" x2c-test true
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
SlurmctldHost=$NODE(127.0.0.1)
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
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
  if ! pgrep -x slurmctld >/dev/null; then slurmctld; fi
  if ! pgrep -x slurmd >/dev/null; then slurmd; fi
  wait_for slurmctld scontrol ping
  wait_for "the SLURM node" sh -c "sinfo -h -N -o %t | grep -Eq '^(idle|mix|alloc)'"
}

write_env() {
  cat > "$STATE/env" <<ENV
X2C_TEST_SSH_CONFIG=$STATE/ssh/ssh_config
X2C_TEST_KNOWN_HOSTS=$STATE/ssh/known_hosts
X2C_TEST_SSH_ALIAS=x2c-test
X2C_TEST_SSH_PORT=$SSH_PORT
X2C_TEST_SSH_KEY=$STATE/ssh/id_ed25519
X2C_TEST_SSHD_CONFIG=$STATE/ssh/sshd_config
X2C_TEST_SLURM=1
ENV
}

down() {
  if [ -f "$STATE/ssh/sshd.pid" ]; then kill "$(cat "$STATE/ssh/sshd.pid")" 2>/dev/null || true; fi
  scancel --user=root >/dev/null 2>&1 || true
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  for _ in $(seq 1 50); do { pgrep -x slurmctld || pgrep -x slurmd; } >/dev/null || break; sleep 0.1; done
  if [ -f "$SLURM_CONF" ] && head -1 "$SLURM_CONF" | grep -q "$MARK"; then rm -f "$SLURM_CONF"; fi
  rm -f "$STATE/env"
}

case "${1:-}" in
  up) need_root; ensure_packages; mkdir -p "$STATE"; up_ssh; up_slurm; write_env; echo "testcluster: up ($STATE/env)";;
  down) need_root; down; echo "testcluster: down";;
  status) [ -f "$STATE/env" ] && cat "$STATE/env" && sinfo && exit 0; echo "testcluster: not up"; exit 1;;
  *) echo "usage: $0 up|down|status"; exit 2;;
esac
