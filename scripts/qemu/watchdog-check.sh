# shellcheck shell=bash
# Check 6 of scripts/qemu-boot-test.sh (sourced by it): systemd's service watchdog restarts a
# hung daemon. onair.service is Type=notify with WatchdogSec=; the daemon pings from its
# supervisor loop only. The test boots the box with the kernel argument
# systemd.setenv=ONAIR_TEST_HOOKS=1 (test only: nothing on a real box sets it), so SIGUSR2
# stops that loop for good. Then, on the box:
#   - SIGUSR2 to the daemon's main PID; the process stays alive but stops pinging;
#   - systemd logs "Watchdog timeout" at most WatchdogSec after the signal, kills the daemon
#     and starts a new one (a new MainPID, NRestarts + 1);
#   - the new daemon goes live again (`onair status --json` says "live").
# Uses the test script's BOX_SSH, phase, log, pass, fail and qemu_alive.

# Seconds of the box's CLOCK_MONOTONIC in a journal line printed with -o short-monotonic.
_wd_mono() { sed -n 's/^journal: \[ *\([0-9.]*\)\].*/\1/p' | head -1; }

watchdog_check() {
    phase "service watchdog: a hung daemon is restarted"
    local out
    out=$(timeout 200 "${BOX_SSH[@]}" sh -s 2>&1 <<'BOX'
set -u
unit=onair.service
wd=$(systemctl show -p WatchdogUSec --value $unit)
pid=$(systemctl show -p MainPID --value $unit)
n0=$(systemctl show -p NRestarts --value $unit)
t0=$(cut -d' ' -f1 /proc/uptime)
kill -USR2 "$pid"
new=$pid i=0
while [ $i -lt 240 ]; do
	new=$(systemctl show -p MainPID --value $unit)
	[ "$new" != 0 ] && [ "$new" != "$pid" ] && break
	sleep 0.5
	i=$((i + 1))
done
t1=$(cut -d' ' -f1 /proc/uptime)
echo "watchdog=$wd old_pid=$pid new_pid=$new restarts_before=$n0 restarts_after=$(systemctl show -p NRestarts --value $unit) signal_at=$t0 new_pid_at=$t1"
journalctl -b -u $unit -o short-monotonic --no-pager | grep -E 'test hook \(SIGUSR2\)' | tail -n 1 | sed 's/^/journal: hook /'
journalctl -b -u $unit -o short-monotonic --no-pager | grep -E 'Watchdog timeout' | tail -n 1 | sed 's/^/journal: timeout /'
i=0
while [ $i -lt 120 ]; do
	state=$(onair status 2>/dev/null | awk '$1 == "state" { print $2; exit }')
	[ "$state" = live ] && break
	sleep 1
	i=$((i + 1))
done
echo "state_after=${state:-none} live_at=$(cut -d' ' -f1 /proc/uptime)"
BOX
    ) || true
    printf '%s\n' "$out" | sed 's/^/    /'
    local wd old new n0 n1 t_sig t_new t_live t_timeout state
    _wd_kv() { sed -n "s/.*\<$1=\([^ ]*\).*/\1/p" <<<"$out" | head -1; }
    wd=$(_wd_kv watchdog) old=$(_wd_kv old_pid) new=$(_wd_kv new_pid) n0=$(_wd_kv restarts_before)
    n1=$(_wd_kv restarts_after) t_sig=$(_wd_kv signal_at) t_new=$(_wd_kv new_pid_at) t_live=$(_wd_kv live_at)
    state=$(_wd_kv state_after)
    t_timeout=$(grep '^journal: timeout' <<<"$out" | sed 's/^journal: timeout /journal: /' | _wd_mono)
    local wd_s=${wd%s}
    # WatchdogUSec prints as e.g. "20s"; anything else means the unit lost its watchdog.
    if ! [[ $wd_s =~ ^[0-9]+$ ]]; then
        fail "service watchdog: onair.service has no WatchdogSec (WatchdogUSec=$wd)"
        return
    fi
    if [ -z "$t_timeout" ] || ! grep -q '^journal: hook' <<<"$out"; then
        fail "service watchdog: no \"Watchdog timeout\" for the daemon stopped by the test hook (is systemd.setenv=ONAIR_TEST_HOOKS=1 on the kernel command line?)"
        return
    fi
    local to_timeout to_new to_live
    to_timeout=$(awk -v a="$t_sig" -v b="$t_timeout" 'BEGIN { printf "%.1f", b - a }')
    to_new=$(awk -v a="$t_sig" -v b="$t_new" 'BEGIN { printf "%.1f", b - a }')
    to_live=$(awk -v a="$t_sig" -v b="$t_live" 'BEGIN { printf "%.1f", b - a }')
    # systemd fires WatchdogSec after the last ping, which came at most WatchdogSec/2 before
    # the signal; a second of slack for the emulated clock.
    if awk -v t="$to_timeout" -v w="$wd_s" 'BEGIN { exit !(t <= w + 1) }' &&
        [ -n "$new" ] && [ "$new" != "$old" ] && [ "$new" != 0 ] &&
        [ "$n1" = $((n0 + 1)) ] && [ "$state" = live ]; then
        pass "service watchdog: daemon hung by the test hook (SIGUSR2, pid $old) -> systemd's watchdog timeout after ${to_timeout}s (WatchdogSec=${wd}), new daemon pid $new after ${to_new}s, live again after ${to_live}s (NRestarts $n0 -> $n1)"
    else
        fail "service watchdog: expected a watchdog timeout within ${wd} of SIGUSR2 (got ${to_timeout}s), a new MainPID (old $old, new $new), NRestarts $n0 -> $((n0 + 1)) (got $n1) and state live (got ${state:-none})"
    fi
}
