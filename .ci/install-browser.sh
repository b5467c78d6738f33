#!/usr/bin/env bash
# Headless Chromium for the report's browser test (tests/unit/test_report.py): Debian's chromium and
# its matching chromedriver, no browser download by selenium. Needs root (CI runs as root).
# Where the packages are absent the browser test skips and says why.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver
