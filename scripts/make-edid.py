#!/usr/bin/env python3
"""Writes the EDID the box offers an HDMI source through its HDMI-to-CSI bridge (TC358743).

    python3 scripts/make-edid.py [OUT]     (default: the file the image ships and the daemon
                                            embeds, board/common/rootfs-overlay/usr/share/onair/hdmi-edid.bin)
    python3 scripts/make-edid.py --check   (exit 1 if the shipped file differs from this script's)

An HDMI source reads the sink's EDID to choose what it sends. The Pi's two CSI-2 lanes (972
Mbit/s each with the tc358743 overlay's default link frequency) carry UYVY (16 bits a pixel) up to
1080p30: 1920x1080x30x16 = 995 Mbit/s. So the EDID offers nothing with a higher pixel rate than
1080p30: no 1080p50/60 (1659 and 1991 Mbit/s), which v4l2-ctl's built-in "hdmi" EDID offers.

Offered (CTA-861 VICs, the source's 59.94/29.97/23.98 variants included):
  1080p30 (34, and the preferred, native detailed timing), 1080p25 (33), 1080p24 (32),
  720p60 (4), 720p50 (19), 720p30 (62), 720p25 (61), 720p24 (60),
  576p50 (18 16:9, 17 4:3), 480p60 (3 16:9, 2 4:3), 640x480p60 (1).
Sound: LPCM stereo, 48 kHz, 16/20/24 bit (the tc358743's I2S card is read at 48 kHz). The HDMI
vendor block (physical address 1.0.0.0, max TMDS clock 75 MHz) makes sources send HDMI with
sound rather than DVI. RGB only (every source can send it; the bridge converts to UYVY).

Two 128-byte blocks (base EDID 1.3 + CTA-861 extension), each with its checksum. The unit tests in
src/config/edid.rs decode the shipped file independently and check all of this.
"""
import pathlib
import sys

OUT = pathlib.Path(__file__).resolve().parent.parent / "board/common/rootfs-overlay/usr/share/onair/hdmi-edid.bin"


def checksum(block: bytearray) -> None:
    block[127] = (-sum(block[:127])) & 0xFF


def dtd(pixclk_khz, hact, hfp, hsync, hbp, vact, vfp, vsync, vbp):
    """An 18-byte detailed timing descriptor, progressive, +hsync +vsync, no borders."""
    hblank, vblank = hfp + hsync + hbp, vfp + vsync + vbp
    clk = pixclk_khz // 10
    return bytes([
        clk & 0xFF, clk >> 8,
        hact & 0xFF, hblank & 0xFF, ((hact >> 8) << 4) | (hblank >> 8),
        vact & 0xFF, vblank & 0xFF, ((vact >> 8) << 4) | (vblank >> 8),
        hfp & 0xFF, hsync & 0xFF, ((vfp & 0xF) << 4) | (vsync & 0xF),
        ((hfp >> 8) << 6) | ((hsync >> 8) << 4) | ((vfp >> 4) << 2) | (vsync >> 4),
        0, 0, 0,  # image size unknown (the VICs carry the aspect ratio)
        0, 0,  # no borders
        0x1E,  # digital separate sync, +vsync, +hsync, progressive
    ])


def text_descriptor(tag, text):
    body = text.encode("ascii")[:13]
    if len(body) < 13:
        body += b"\n" + b" " * (12 - len(body))
    return bytes([0, 0, 0, tag, 0]) + body


def base_block() -> bytearray:
    b = bytearray(128)
    b[0:8] = b"\x00\xff\xff\xff\xff\xff\xff\x00"
    # Manufacturer "LNX" (the Linux Foundation's PNP ID, as v4l2-ctl's generated EDIDs use),
    # product 0x4F41 ("OA"), no serial number, made in 2026.
    letters = [ord(c) - ord("A") + 1 for c in "LNX"]
    mfg = (letters[0] << 10) | (letters[1] << 5) | letters[2]
    b[8], b[9] = mfg >> 8, mfg & 0xFF
    b[10], b[11] = 0x41, 0x4F
    b[16], b[17] = 0, 2026 - 1990
    b[18], b[19] = 1, 3  # EDID 1.3
    b[20] = 0x80  # digital input
    b[21], b[22] = 0, 0  # screen size unknown
    b[23] = 120  # gamma 2.2
    b[24] = 0x0E  # RGB colour, sRGB, first detailed timing is the preferred one
    b[25:35] = bytes([0xEE, 0x91, 0xA3, 0x54, 0x4C, 0x99, 0x26, 0x0F, 0x50, 0x54])  # sRGB, D65
    b[35], b[36], b[37] = 0x20, 0, 0  # established timing: 640x480@60
    b[38:54] = b"\x01\x01" * 8  # no standard timings
    b[54:72] = dtd(74250, 1920, 88, 44, 148, 1080, 4, 5, 36)  # 1080p30 (VIC 34)
    b[72:90] = dtd(74250, 1280, 110, 40, 220, 720, 5, 5, 20)  # 720p60 (VIC 4)
    # Range limits: 23-61 Hz vertical, 15-46 kHz horizontal, 80 MHz pixel clock at most.
    b[90:108] = bytes([0, 0, 0, 0xFD, 0, 23, 61, 15, 46, 8, 0, 0x0A] + [0x20] * 6)
    b[108:126] = text_descriptor(0xFC, "onair HDMI")
    b[126] = 1  # one extension block
    checksum(b)
    return b


VICS = [34, 33, 32, 4, 19, 62, 61, 60, 18, 17, 3, 2, 1]


def cta_block() -> bytearray:
    c = bytearray(128)
    blocks = bytearray()
    blocks += bytes([(2 << 5) | len(VICS)]) + bytes(VICS)  # video
    blocks += bytes([(1 << 5) | 3, 0x09, 0x04, 0x07])  # audio: LPCM 2 ch, 48 kHz, 16/20/24 bit
    blocks += bytes([(4 << 5) | 3, 0x01, 0x00, 0x00])  # speakers: front left/right
    # Video capability: RGB quantization range selectable (the source says full or limited in
    # its AVI InfoFrame and the bridge follows), IT and CE formats underscanned.
    blocks += bytes([(7 << 5) | 2, 0x00, 0x4A])
    # HDMI vendor block: OUI 00-0C-03, physical address 1.0.0.0, no deep colour, 75 MHz TMDS.
    blocks += bytes([(3 << 5) | 7, 0x03, 0x0C, 0x00, 0x10, 0x00, 0x00, 75 // 5])
    c[0], c[1] = 0x02, 0x03  # CTA-861 extension, revision 3
    c[2] = 4 + len(blocks)  # no detailed timings here: they start (and end) after the blocks
    c[3] = 0xC1  # underscan, basic audio; RGB only; one native detailed timing (1080p30)
    c[4:4 + len(blocks)] = blocks
    checksum(c)
    return c


def edid() -> bytes:
    return bytes(base_block() + cta_block())


def main() -> int:
    data = edid()
    if sys.argv[1:] == ["--check"]:
        if OUT.read_bytes() != data:
            print(f"{OUT} differs from what scripts/make-edid.py writes", file=sys.stderr)
            return 1
        return 0
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    print(f"{out}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
