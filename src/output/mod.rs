//! Where the access units go: a WHIP server or an RTMP server.
