#!/usr/bin/env bash
# Renders the update-capability HTML card in headless Chromium (Debian's
# chromium package) and checks the screenshot: a PNG of the requested size
# whose pixels are not one flat colour (text, badge and table drew).
# Exits 77 (ctest SKIP) when chromium is not installed.
# usage: card_screenshot.sh CARD_RENDER_BIN
set -euo pipefail
render=$1
chromium=${UPK_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  echo "SKIP: $chromium not installed (scripts/deps.sh installs chromium)"
  exit 77
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$render" "$dir/card.html"
grep -q '<div class="card">' "$dir/card.html"
# timeout kills chromium (our child) should it hang; bounded at 90 s.
timeout 90 "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$dir/profile" --screenshot="$dir/card.png" --window-size=600,400 \
  "file://$dir/card.html" >"$dir/chromium.log" 2>&1 || {
  echo "chromium failed:"; cat "$dir/chromium.log"; exit 1; }
[ -s "$dir/card.png" ] || { echo "no screenshot written"; cat "$dir/chromium.log"; exit 1; }
python3 - "$dir/card.png" <<'PY'
# Decodes the PNG with the standard library only and counts colours.
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, w = 8, b"", 0
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
assert (w, h) == (600, 400), f"size {w}x{h}, want 600x400"
assert depth == 8 and ctype in (2, 6), f"unexpected PNG format depth={depth} type={ctype}"
bpp = 3 if ctype == 2 else 4
raw = zlib.decompress(idat)
stride = w * bpp
prev = bytearray(stride)
colours, counts = set(), {}
for y in range(h):
    f = raw[y * (stride + 1)]
    line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, stride, bpp):
        px = bytes(line[x:x + 3])
        counts[px] = counts.get(px, 0) + 1
    prev = line
top = max(counts.values())
share = 1 - top / (w * h)
print(f"card.png {w}x{h}: {len(counts)} distinct colours, {share:.1%} of pixels off the main colour")
assert len(counts) >= 16, "too few colours: blank or flat render"
assert share >= 0.05, "almost all pixels one colour: card did not render"
# The green badge (#1a7f37) of a supported device must be on screen.
assert any(abs(p[0] - 0x1a) < 8 and abs(p[1] - 0x7f) < 8 and abs(p[2] - 0x37) < 8 for p in counts), "no green badge"
PY
echo "card screenshot OK"
