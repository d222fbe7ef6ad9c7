#!/usr/bin/env python3
"""Checks an eval report folder written by mote::eval::write_report, the way a reader sees it.

1. results.json parses and holds the summaries.
2. report.html is well-formed (every tag closed in order), loads nothing from outside (no scripts,
   no src/href, no CSS url() or @import) and holds the three plots, each an <svg> with its
   elements: loss-plot with <path>/<polyline> curves, percent-plot and score-plot with <rect> bars.
3. Headless Chromium renders the page; the PNG is decoded here (zlib, no imaging library) and each
   plot's region, read from its absolute position on the page, must hold drawn pixels and coloured
   ones (curves and bars are drawn in colour, axes and text in grey).

Usage: check_report.py REPORT_FOLDER
Exit 0 when the report passes, 1 with a sentence when it does not, 77 (skipped) when no Chromium is
installed and CI is not "true".
"""
import html.parser
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

SKIP = 77
PLOTS = {
    # id: (elements one of which must be present, at least this many coloured pixels rendered)
    "loss-plot": (("path", "polyline"), 1000),
    "percent-plot": (("rect",), 1500),
    "score-plot": (("rect",), 1500),
}
VOID_ELEMENTS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Failure(Exception):
    pass


class ReportParser(html.parser.HTMLParser):
    """Checks nesting and collects each plot's position and element counts."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []
        self.svgs = {}  # id -> {"attrs": {...}, "counts": {tag: n}}
        self.current_svg = None
        self.tables = 0
        self.style_text = []
        self.in_style = False

    def where(self):
        line, column = self.getpos()
        return f"line {line}, column {column + 1}"

    def check_attributes(self, tag, attrs):
        if tag in ("script", "link", "iframe", "object", "embed", "img"):
            raise Failure(f"report.html has a <{tag}> element at {self.where()}; the page must be self-contained")
        for name, value in attrs:
            if name in ("src", "href", "xlink:href") and value and not value.startswith("#"):
                raise Failure(f"report.html loads {value!r} through {name}= at {self.where()}; the page must be self-contained")
            if name.startswith("on"):
                raise Failure(f"report.html has a script handler {name}= at {self.where()}; the page needs no JavaScript")

    def open_element(self, tag, attrs, closes_itself):
        self.check_attributes(tag, attrs)
        if tag == "svg":
            if self.current_svg is not None:
                raise Failure(f"report.html nests an <svg> inside another at {self.where()}")
            svg_id = dict(attrs).get("id", f"unnamed-{len(self.svgs)}")
            self.svgs[svg_id] = {"attrs": dict(attrs), "counts": {}}
            self.current_svg = svg_id if not closes_itself else None
        elif self.current_svg is not None:
            counts = self.svgs[self.current_svg]["counts"]
            counts[tag] = counts.get(tag, 0) + 1
        if tag == "table":
            self.tables += 1

    def handle_starttag(self, tag, attrs):
        self.open_element(tag, attrs, False)
        if tag == "style":
            self.in_style = True
        if tag not in VOID_ELEMENTS:
            self.stack.append((tag, self.getpos()))

    def handle_startendtag(self, tag, attrs):
        self.open_element(tag, attrs, True)

    def handle_endtag(self, tag):
        if tag in VOID_ELEMENTS:
            return
        if not self.stack:
            raise Failure(f"report.html closes </{tag}> at {self.where()} with no element open")
        open_tag, (line, column) = self.stack.pop()
        if open_tag != tag:
            raise Failure(f"report.html closes </{tag}> at {self.where()} but <{open_tag}> from line {line}, column {column + 1} is open")
        if tag == "svg":
            self.current_svg = None
        if tag == "style":
            self.in_style = False

    def handle_data(self, data):
        if self.in_style:
            self.style_text.append(data)


def check_html(folder):
    path = folder / "report.html"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise Failure(f"cannot read {path} as UTF-8 text: {e}")
    parser = ReportParser()
    parser.feed(text)
    parser.close()
    if parser.stack:
        tag, (line, column) = parser.stack[-1]
        raise Failure(f"report.html ends with <{tag}> from line {line}, column {column + 1} still open")
    css = "".join(parser.style_text)
    if re.search(r"url\s*\(|@import", css):
        raise Failure("report.html's CSS loads a resource through url() or @import; the page must be self-contained")
    if parser.tables == 0:
        raise Failure("report.html has no <table> of the figures")
    boxes = {}
    for plot_id, (elements, _) in PLOTS.items():
        svg = parser.svgs.get(plot_id)
        if svg is None:
            raise Failure(f"report.html has no <svg id=\"{plot_id}\">")
        counts = svg["counts"]
        drawn = sum(counts.get(e, 0) for e in elements)
        # The bar plots' background is a <rect> too, so they need one more.
        needed = 2 if elements == ("rect",) else 1
        if drawn < needed:
            names = " or ".join(f"<{e}>" for e in elements)
            raise Failure(f"the plot <svg id=\"{plot_id}\"> holds no {names} elements to draw its data")
        attrs = svg["attrs"]
        style = attrs.get("style", "")
        left = re.search(r"left:\s*(\d+)px", style)
        top = re.search(r"top:\s*(\d+)px", style)
        try:
            width, height = int(attrs["width"]), int(attrs["height"])
        except (KeyError, ValueError):
            raise Failure(f"<svg id=\"{plot_id}\"> lacks integer width and height attributes")
        if not (left and top and "position:absolute" in style.replace(" ", "")):
            raise Failure(f"<svg id=\"{plot_id}\"> is not placed at a fixed position (style=\"{style}\")")
        boxes[plot_id] = (int(left.group(1)), int(top.group(1)), width, height)
    return boxes


def check_results(folder):
    path = folder / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise Failure(f"cannot parse {path}: {e}")
    if not isinstance(results.get("summaries"), dict) or not results["summaries"]:
        raise Failure(f"{path} has no summaries")


def decode_png(data):
    """Returns (width, height, rows) with each row a bytes object of RGB triples."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise Failure("the screenshot is not a PNG file")
    pos, idat, palette, header = 8, [], None, None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise Failure("the screenshot PNG has no IHDR chunk")
    width, height, depth, color_type, _, _, interlace = header
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(color_type)
    if depth != 8 or channels is None or interlace != 0:
        raise Failure(f"the screenshot PNG has bit depth {depth}, colour type {color_type}, interlace {interlace}; "
                      "this decoder reads 8-bit, non-interlaced images")
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    if len(raw) != height * (stride + 1):
        raise Failure("the screenshot PNG's image data has the wrong length")
    previous = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous))
        elif kind == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = previous[i]
                c = previous[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                predictor = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + predictor) & 0xFF
        elif kind != 0:
            raise Failure(f"the screenshot PNG uses unknown filter type {kind} on row {y}")
        previous = line
        if color_type == 2:
            rows.append(bytes(line))
        elif color_type == 6:
            rgb = bytearray(width * 3)
            rgb[0::3], rgb[1::3], rgb[2::3] = line[0::4], line[1::4], line[2::4]
            rows.append(bytes(rgb))
        elif color_type in (0, 4):
            gray = line[0::channels]
            rgb = bytearray(width * 3)
            rgb[0::3], rgb[1::3], rgb[2::3] = gray, gray, gray
            rows.append(bytes(rgb))
        else:
            if palette is None:
                raise Failure("the screenshot PNG is paletted but has no PLTE chunk")
            rows.append(b"".join(palette[3 * i:3 * i + 3] for i in line))
    return width, height, rows


def find_chromium():
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def render(chromium, page, width, height, workdir):
    shot = workdir / "report.png"
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--force-device-scale-factor=1", f"--user-data-dir={workdir / 'profile'}",
               f"--screenshot={shot}", f"--window-size={width},{height}", page.resolve().as_uri()]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        raise Failure("Chromium did not finish the screenshot within 180 seconds")
    if not shot.exists():
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise Failure(f"Chromium exited {done.returncode} without writing a screenshot:\n{tail}")
    return shot.read_bytes()


def count_pixels(rows, box, scale_x, scale_y):
    """(drawn, coloured) pixels inside the box: drawn differs from white, coloured has chroma."""
    left, top, width, height = box
    x0, x1 = int(left * scale_x), int((left + width) * scale_x)
    y0, y1 = int(top * scale_y), int((top + height) * scale_y)
    drawn = coloured = 0
    for y in range(y0, min(y1, len(rows))):
        row = rows[y]
        for x in range(x0, min(x1, len(row) // 3)):
            r, g, b = row[3 * x], row[3 * x + 1], row[3 * x + 2]
            if min(r, g, b) < 232:
                drawn += 1
            if max(r, g, b) - min(r, g, b) >= 60:
                coloured += 1
    return drawn, coloured


def main(argv):
    if len(argv) != 2:
        print("usage: check_report.py REPORT_FOLDER", file=sys.stderr)
        return 2
    folder = Path(argv[1])
    try:
        check_results(folder)
        boxes = check_html(folder)
        chromium = find_chromium()
        if chromium is None:
            if os.environ.get("CI") == "true":
                raise Failure("no chromium or chromium-browser on PATH, and CI=true requires the rendering check "
                              "(scripts/setup-debian.sh installs it)")
            print("check_report: skipped the rendering check: no chromium or chromium-browser on PATH")
            return SKIP
        width = max(left + w for left, _, w, _ in boxes.values()) + 20
        height = max(top + h for _, top, _, h in boxes.values()) + 20
        with tempfile.TemporaryDirectory(prefix="mote_check_report_") as tmp:
            png = render(chromium, folder / "report.html", width, height, Path(tmp))
        png_width, png_height, rows = decode_png(png)
        scale_x, scale_y = png_width / width, png_height / height
        for plot_id, box in boxes.items():
            drawn, coloured = count_pixels(rows, box, scale_x, scale_y)
            minimum = PLOTS[plot_id][1]
            if drawn < 500:
                raise Failure(f"the plot {plot_id} renders blank: {drawn} drawn pixels in its {box[2]}x{box[3]} region")
            if coloured < minimum:
                raise Failure(f"the plot {plot_id} renders without its data: {coloured} coloured pixels in its region, "
                              f"expected at least {minimum}")
            print(f"check_report: {plot_id}: {drawn} drawn pixels, {coloured} coloured")
    except Failure as failure:
        print(f"check_report: FAIL: {failure}", file=sys.stderr)
        return 1
    print(f"check_report: {folder} passes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
