"""Take docs/screenshot-ui.png: the page mid-run in headless Chromium at 1280x900.

    .venv/bin/python tests/ui/make_screenshot.py --model qwen2.5-coder-1.5b --out docs/screenshot-ui.png

Starts `notebook-agent ui` on loopback (as test_e2e.py does), uploads examples/sales.csv, asks,
waits until CELLS cells show their outputs, saves the screenshot, then stops the run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_e2e import By, ask, chromium, done, ui_server


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--question", default="Which region has the highest total revenue (units * unit_price)? "
                                         "Plot revenue by region as a bar chart.")
    p.add_argument("--cells", type=int, default=2)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--out", type=Path, default=Path("docs/screenshot-ui.png"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ui_server(Path(tmp), args.model, "--max-turns", "8") as url, \
            chromium(Path(tmp) / "profile") as d:
        ask(d, url, args.question, max_turns=8)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and not done(d):
            if len(d.find_elements(By.CSS_SELECTOR, ".cell:not(.running)")) >= args.cells:
                break
            time.sleep(0.5)
        time.sleep(1.0)  # let images and iframes lay out
        d.execute_script("window.scrollTo(0, 0)")
        d.save_screenshot(str(args.out))
        print(f"saved {args.out} ({'after the run ended: ' + done(d) if done(d) else 'mid-run'})")
        if not done(d):
            d.find_element(By.ID, "stop").click()


if __name__ == "__main__":
    main()
