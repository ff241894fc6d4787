"""A minimal terminal for tests: replays what a program wrote to a pty and gives the final screen.
It knows the control sequences dgemma writes (CR, LF, cursor up/down, erase line) and records any
full-screen clear or home; anything else is an error, so a new sequence cannot slip past a test."""

from __future__ import annotations

import re

_CSI = re.compile(r"\x1b\[([0-9;]*)([A-Za-z])")


class Screen:
    def __init__(self, text: str = ""):
        self.lines: list[list[str]] = [[]]
        self.row = self.col = 0
        self.screen_clears = 0  # ESC[2J, ESC[J or ESC[H: a program must not touch what it did not write
        self.feed(text)

    def _line(self) -> list[str]:
        while len(self.lines) <= self.row:
            self.lines.append([])
        return self.lines[self.row]

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            m = _CSI.match(text, i)
            if m:
                n = int(m.group(1)) if m.group(1).isdigit() else 1
                code = m.group(1) + m.group(2)
                if m.group(2) == "A":
                    self.row = max(0, self.row - n)
                elif m.group(2) == "B":
                    self.row += n
                elif code in ("K", "0K"):
                    del self._line()[self.col:]
                elif code == "2K":
                    self._line().clear()
                elif m.group(2) in "JH":
                    self.screen_clears += 1
                else:
                    raise AssertionError(f"unexpected control sequence {m.group(0)!r}")
                i = m.end()
                continue
            ch = text[i]
            i += 1
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self.row += 1
            elif ch == "\x1b":
                raise AssertionError(f"unexpected escape at {text[i - 1:i + 8]!r}")
            else:
                line = self._line()
                line.extend(" " * (self.col - len(line)))
                if self.col < len(line):
                    line[self.col] = ch
                else:
                    line.append(ch)
                self.col += 1

    def text(self) -> str:
        return "\n".join("".join(line).rstrip() for line in self.lines).strip("\n")
