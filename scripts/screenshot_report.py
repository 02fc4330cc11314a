"""Takes the README's screenshot of a report page with headless Chromium.

    python scripts/screenshot_report.py runs/<run>/report/report.html docs/images/report.png

Needs Debian's `chromium` and the `playwright` package (both in CI's set-up).
"""

import argparse
import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--height", type=int, default=1500)
    args = parser.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                    args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1150, "height": args.height})
        tab.goto(args.page.resolve().as_uri())
        tab.wait_for_load_state("load")
        tab.screenshot(path=str(args.output))
        browser.close()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
