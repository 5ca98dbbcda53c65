#!/bin/sh
# The venue's Wi-Fi, inside the emulated box (test only: scripts/qemu/wifi-boot.sh).
#
# The box's kernel emulates two radios (mac80211_hwsim radios=2): wlan0 stays the box's own,
# wlan1 (with its phy) moves into a network namespace "venue" that plays the venue: hostapd
# (WPA2-PSK or WPA3-SAE, SSID onair-venue, channel 1), dnsmasq (DHCP: 198.51.100.10 for the
# box's radio, router 198.51.100.1) and a route to the receiver through the venue's own
# upstream, the box's second NIC (MAC 52:54:00:6f:61:03, on tap1 of the test's namespace,
# 198.51.100.129), moved into the namespace too. The host routes 198.51.100.0/25 back via
# 198.51.100.130.
#
# The test harness delivers this file through qemu's fw_cfg with the passphrases written in
# (VENUE_PSK, VENUE_SAE below), so they never appear on the kernel command line or in the
# journal; the boot runs it once (systemd.run= on the kernel command line, with
# systemd.unit=multi-user.target: systemd.run alone would make kernel-command-line.target the
# whole boot, and systemd.wants= to run it beside the box's own units), it copies itself
# to /run/onair-venue/venue.sh, and the checks run that over SSH:
#   venue.sh setup          radios, namespace, upstream, DHCP, the access point (WPA2)
#   venue.sh ap wpa2|sae    (re)start the access point with WPA2-PSK or WPA3-SAE
#   venue.sh ap stop        stop it (hostapd deauthenticates the box on the way out)
# Nothing here prints a passphrase.
set -u

DIR=/run/onair-venue
NS=venue
SSID=onair-venue
UPSTREAM_MAC=52:54:00:6f:61:03
BOX_RADIO_MAC=02:00:00:00:00:00

log() { echo "onair-venue: $*" >&2; }
in_ns() { ip netns exec "$NS" "$@"; }

ap_conf() { # wpa2|sae
	cat <<EOF
interface=wlan1
driver=nl80211
ssid=$SSID
hw_mode=g
channel=1
wpa=2
rsn_pairwise=CCMP
ctrl_interface=$DIR/hostapd
EOF
	case $1 in
	wpa2) printf 'wpa_key_mgmt=WPA-PSK\nwpa_passphrase=%s\n' "$VENUE_PSK" ;;
	sae) printf 'wpa_key_mgmt=SAE\nieee80211w=2\nsae_pwe=2\nsae_password=%s\n' "$VENUE_SAE" ;;
	esac
}

# hostapd and dnsmasq run as transient services of their own (systemd-run): the boot's
# kernel-command-line.service that runs `setup` ends, and takes its processes with it.
ap_stop() {
	systemctl stop onair-venue-ap.service 2>/dev/null || true
}

ap_start() { # wpa2|sae
	ap_stop
	(umask 077 && ap_conf "$1" >"$DIR/hostapd.conf")
	rm -f "$DIR/hostapd/wlan1"
	systemd-run --quiet --collect --unit=onair-venue-ap \
		ip netns exec "$NS" hostapd "$DIR/hostapd.conf" ||
		{ log "hostapd did not start ($1)"; return 1; }
	for _ in $(seq 100); do
		[ -S "$DIR/hostapd/wlan1" ] && { log "access point $SSID up ($1)"; return 0; }
		sleep 0.1
	done
	log "hostapd did not come up ($1)"
	return 1
}

setup() {
	mkdir -p "$DIR"
	chmod 700 "$DIR"
	[ "$0" = "$DIR/venue.sh" ] || cp "$0" "$DIR/venue.sh"
	modprobe mac80211_hwsim radios=2 || { log "no mac80211_hwsim"; return 1; }
	for _ in $(seq 100); do
		[ -e /sys/class/net/wlan1/phy80211/name ] && break
		sleep 0.1
	done
	ip netns add "$NS"
	in_ns ip link set lo up
	phy=$(cat /sys/class/net/wlan1/phy80211/name)
	iw phy "$phy" set netns name "$NS" ||
		{ log "cannot move the second radio ($phy)"; return 1; }
	up=""
	for _ in $(seq 100); do
		for d in /sys/class/net/*; do
			[ "$(cat "$d/address" 2>/dev/null)" = "$UPSTREAM_MAC" ] && up=${d##*/}
		done
		[ -n "$up" ] && break
		sleep 0.1
	done
	[ -n "$up" ] || { log "no upstream NIC ($UPSTREAM_MAC)"; return 1; }
	ip link set "$up" netns "$NS"
	in_ns ip link set "$up" name up0
	in_ns ip addr add 198.51.100.130/25 dev up0
	in_ns ip link set up0 up
	in_ns ip route add 192.0.2.0/24 via 198.51.100.129
	in_ns ip route add 203.0.113.0/24 via 198.51.100.129
	in_ns sysctl -qw net.ipv4.ip_forward=1
	ap_start wpa2 || return 1
	in_ns ip addr add 198.51.100.1/25 dev wlan1
	systemd-run --quiet --collect --unit=onair-venue-dhcp \
		ip netns exec "$NS" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --user=root \
		--interface=wlan1 --bind-interfaces --dhcp-authoritative \
		--dhcp-range=198.51.100.10,198.51.100.10,255.255.255.128,12h \
		--dhcp-host="$BOX_RADIO_MAC,198.51.100.10" \
		--dhcp-option=option:router,198.51.100.1 --dhcp-option=option:dns-server \
		--dhcp-leasefile="$DIR/dnsmasq.leases" ||
		{ log "dnsmasq did not start"; return 1; }
	log "venue ready: $SSID on wlan1 (namespace $NS), upstream $up -> 198.51.100.129"
}

case ${1:-} in
setup) setup ;;
ap)
	case ${2:-} in
	wpa2 | sae) ap_start "$2" ;;
	stop) ap_stop && log "access point stopped" ;;
	*) log "ap wpa2|sae|stop"; exit 2 ;;
	esac
	;;
*) log "usage: venue.sh setup | ap wpa2|sae|stop"; exit 2 ;;
esac
