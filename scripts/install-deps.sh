#!/usr/bin/env bash
# Install the Debian packages that the tests and `make run` use, when missing.
# Runs apt-get only as root; otherwise it names what is missing and fails,
# since a test that lacks its tool must fail, not skip.
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package
declare -A wanted=(
  [postfix]=postfix
  [swaks]=swaks
  [openssl]=openssl
  [chromium]=chromium
  [testssl]=testssl.sh
  [dig]=dnsutils
  [perf]=linux-perf   # make bench --profile
)

missing=()
for cmd in "${!wanted[@]}"; do
  if [ "$cmd" = postfix ]; then
    [ -x /usr/sbin/postfix ] || missing+=("${wanted[$cmd]}")
  else
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${wanted[$cmd]}")
  fi
done
# CPython's email test messages (tests/interop/test_relay_content.py): Debian
# ships Lib/test/test_email in a separate package; other builds include it.
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
if ! "$python" -c "import test.test_email" 2>/dev/null; then
  if [ "$("$python" -c 'import sys; print(sys.base_prefix)')" = /usr ]; then
    missing+=("$("$python" -c 'import sys; print("libpython%d.%d-testsuite" % sys.version_info[:2])')")
  else
    echo "warning: $python lacks test.test_email (CPython's test suite)" >&2
  fi
fi

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${missing[*]}; install them as root:" >&2
  echo "  apt-get install ${missing[*]}" >&2
  exit 1
fi

echo "installing Debian packages: ${missing[*]}"
# Postfix asks how to configure the system instance; we run private ones.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
