"""What `dgemma generate` draws on a terminal: a progress line and the --visual canvas, both on
standard error, both drawn so that they never overwrite or clear the generated text or anything
above them (no screen clears: only the lines they wrote themselves are erased)."""

from __future__ import annotations

import shutil
import time

CLEAR_LINE = "\x1b[2K"


class ProgressLine:
    """`canvas N, step M` redrawn in place on a terminal. When stdout shares the screen, the line is
    erased before any text is written and not drawn again (the text stays where it was written)."""

    def __init__(self, err, shares_screen: bool):
        self.err = err
        self.enabled = err.isatty()
        self.shares_screen = shares_screen
        self.shown = False

    def step(self, canvas: int, step: int) -> None:
        if self.enabled:
            self.err.write(f"\r{CLEAR_LINE}canvas {canvas}, step {step}")
            self.err.flush()
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.err.write(f"\r{CLEAR_LINE}")
            self.err.flush()
            self.shown = False

    def before_text(self) -> None:
        self.clear()
        if self.shares_screen:
            self.enabled = False


class CanvasView:
    """--visual: the text so far and the canvas being denoised, redrawn on the lines it needs (cursor
    up, clear those lines, write). erase() blanks them and leaves the cursor where the view began."""

    def __init__(self, err, delay: float):
        self.err = err
        self.delay = delay
        self.height = 0  # lines the view occupies; the cursor is on its last line

    def _lines(self, text: str) -> list[str]:
        cols, rows = shutil.get_terminal_size((80, 24))
        width = max(cols - 1, 1)  # never write the last column: some terminals wrap there
        lines = []
        for logical in text.split("\n"):
            lines.extend(logical[i:i + width] for i in range(0, max(len(logical), 1), width))
        return lines[-max(rows - 1, 1):]  # the cursor cannot move above the top of the screen

    def _to_top(self) -> str:
        return ("\r" + (f"\x1b[{self.height - 1}A" if self.height > 1 else "")) if self.height else ""

    def draw(self, header: str, text: str) -> None:
        lines = self._lines(f"{header}\n{text}")
        height = max(self.height, len(lines))
        lines += [""] * (height - len(lines))
        self.err.write(self._to_top() + "\n".join(CLEAR_LINE + line for line in lines))
        self.err.flush()
        self.height = height
        if self.delay > 0:
            time.sleep(self.delay)

    def erase(self) -> None:
        if not self.height:
            return
        down = "\x1b[1B"
        self.err.write(self._to_top() + down.join([CLEAR_LINE] * self.height)
                       + (f"\x1b[{self.height - 1}A" if self.height > 1 else "") + "\r")
        self.err.flush()
        self.height = 0
