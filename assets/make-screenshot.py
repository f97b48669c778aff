#!/usr/bin/env python3
"""Turns a terminal capture with colours (`tmux capture-pane -p -e`) into an
SVG that looks like the terminal. Used to make assets/dashboard.svg:

    tmux new -d -s rs -x 160 -y 48 'ringside --vnodes 16'
    sleep 12; tmux send-keys -t rs j x; sleep 5
    tmux capture-pane -p -e -t rs | python3 assets/make-screenshot.py > assets/dashboard.svg
"""
import html
import re
import sys

CELL_W, CELL_H, PAD = 8.4, 17, 12
BG, FG = "#1d1f21", "#d8d8d8"
BASIC = ["#1d1f21", "#cc6666", "#b5bd68", "#f0c674", "#81a2be", "#b294bb", "#8abeb7", "#c5c8c6",
         "#666666", "#d54e53", "#b9ca4a", "#e7c547", "#7aa6da", "#c397d8", "#70c0b1", "#eaeaea"]


def xterm256(n):
    if n < 16:
        return BASIC[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return "#%02x%02x%02x" % (steps[n // 36], steps[(n // 6) % 6], steps[n % 6])
    v = 8 + (n - 232) * 10
    return "#%02x%02x%02x" % (v, v, v)


def parse(lines):
    """Yields rows of (char, fg, bg, bold) cells."""
    sgr = re.compile(r"\x1b\[([0-9;]*)m")
    for line in lines:
        fg, bg, bold, reverse = None, None, False, False
        row, i = [], 0
        while i < len(line):
            m = sgr.match(line, i)
            if m:
                codes = [int(c) if c else 0 for c in m.group(1).split(";")]
                k = 0
                while k < len(codes):
                    c = codes[k]
                    if c == 0:
                        fg, bg, bold, reverse = None, None, False, False
                    elif c == 1:
                        bold = True
                    elif c == 22:
                        bold = False
                    elif c == 7:
                        reverse = True
                    elif c == 27:
                        reverse = False
                    elif 30 <= c <= 37:
                        fg = BASIC[c - 30]
                    elif 90 <= c <= 97:
                        fg = BASIC[c - 90 + 8]
                    elif c == 39:
                        fg = None
                    elif 40 <= c <= 47:
                        bg = BASIC[c - 40]
                    elif 100 <= c <= 107:
                        bg = BASIC[c - 100 + 8]
                    elif c == 49:
                        bg = None
                    elif c in (38, 48) and k + 1 < len(codes):
                        if codes[k + 1] == 5 and k + 2 < len(codes):
                            col = xterm256(codes[k + 2])
                            k += 2
                        elif codes[k + 1] == 2 and k + 4 < len(codes):
                            col = "#%02x%02x%02x" % tuple(codes[k + 2:k + 5])
                            k += 4
                        else:
                            col = None
                        if c == 38:
                            fg = col
                        else:
                            bg = col
                    k += 1
                i = m.end()
                continue
            f, b = (bg or BG, fg or FG) if reverse else (fg or FG, bg)
            row.append((line[i], f, b, bold))
            i += 1
        yield row


def main():
    rows = list(parse(sys.stdin.read().rstrip("\n").split("\n")))
    width = max((len(r) for r in rows), default=0)
    w, h = PAD * 2 + width * CELL_W, PAD * 2 + len(rows) * CELL_H
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h:.0f}" viewBox="0 0 {w:.0f} {h:.0f}">',
           f'<rect width="100%" height="100%" rx="8" fill="{BG}"/>',
           '<g font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="14">']
    for y, row in enumerate(rows):
        top = PAD + y * CELL_H
        for x, (_, _, b, _) in enumerate(row):
            if b:
                out.append(f'<rect x="{PAD + x * CELL_W:.1f}" y="{top}" width="{CELL_W + 0.3:.1f}" height="{CELL_H}" fill="{b}"/>')
        x = 0
        while x < len(row):
            ch, f, _, bold = row[x]
            start = x
            text = ""
            while x < len(row) and row[x][1] == f and row[x][3] == bold:
                text += row[x][0]
                x += 1
            if text.strip():
                weight = ' font-weight="bold"' if bold else ""
                out.append(f'<text x="{PAD + start * CELL_W:.1f}" y="{top + 13}" fill="{f}"{weight} '
                           f'textLength="{len(text) * CELL_W:.1f}" xml:space="preserve">{html.escape(text)}</text>')
    out.append("</g></svg>")
    print("\n".join(out))


if __name__ == "__main__":
    main()
