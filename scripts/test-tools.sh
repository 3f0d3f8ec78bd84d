#!/usr/bin/env bash
# Installs the checkers some tests drive, at pinned versions into build/tools (gitignored):
# * the page checkers of tests/traceapi/test_pages_*.py, from npm: axe-core (accessibility
#   rules, injected into Chromium) and the Nu Html Checker (vnu.jar, HTML validity; its 26.x
#   releases need Java >= 17, Debian 12's default-jre-headless);
# * the OpenAPI checkers of tests/traceapi/test_openapi.py: Redocly CLI (npm @redocly/cli; its
#   2.x releases need Node.js >= 20.19) and openapi-python-client (PyPI) in a virtualenv of its
#   own, since it caps httpx below the version the project uses.
# A JRE and nodejs/npm are installed from Debian only when missing (as root). Prints the
# environment variables that point the tests at the tools. Safe to run twice: nothing is
# fetched when the pinned versions are in place.
set -euo pipefail
cd "$(dirname "$0")/.."

AXE_VERSION=4.14.1
VNU_VERSION=26.9.27
REDOCLY_VERSION=2.77.0
CLIENT_GEN_VERSION=0.29.1
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
TOOLS=${AGRITRACE_TOOLS_DIR:-$PWD/build/tools}

java_ok() {
  # `java -version` prints e.g. openjdk version "17.0.15" (Java 8: "1.8.0_412").
  command -v java >/dev/null \
    && java -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); ok = (v[1] >= 17) } END { exit !ok }'
}

need=()
java_ok || need+=(default-jre-headless)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if ((${#need[@]})); then
  echo "installing: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
java_ok || { echo "test-tools: vnu.jar $VNU_VERSION needs Java >= 17" >&2; exit 1; }
# @redocly/cli 2.x declares engines node ">=22.12.0 || >=20.19.0 <21.0.0" (and enforces it).
node -e 'const [a, b] = process.versions.node.split(".").map(Number);
  process.exit(a >= 22 || (a === 20 && b >= 19) ? 0 : 1)' \
  || { echo "test-tools: Redocly CLI $REDOCLY_VERSION needs Node.js >= 20.19" >&2; exit 1; }

installed() {  # installed PACKAGE VERSION: true when node_modules holds exactly that version
  local manifest="$TOOLS/node_modules/$1/package.json"
  [ -f "$manifest" ] \
    && [ "$(node -p "require(process.argv[1]).version" "$manifest")" = "$2" ]
}

if ! installed axe-core "$AXE_VERSION" || ! installed vnu-jar "$VNU_VERSION" \
  || ! installed @redocly/cli "$REDOCLY_VERSION"; then
  mkdir -p "$TOOLS"
  npm install --prefix "$TOOLS" --save-exact --no-audit --no-fund --loglevel=error \
    "axe-core@$AXE_VERSION" "vnu-jar@$VNU_VERSION" "@redocly/cli@$REDOCLY_VERSION" >&2
fi

CLIENT_GEN_VENV="$TOOLS/openapi-python-client"
CLIENT_GEN="$CLIENT_GEN_VENV/bin/openapi-python-client"
if ! "$CLIENT_GEN" --version 2>/dev/null | grep -qx "openapi-python-client version: $CLIENT_GEN_VERSION"; then
  "$PYTHON" -m venv --clear "$CLIENT_GEN_VENV" >&2
  "$CLIENT_GEN_VENV/bin/python" -m pip install --quiet "openapi-python-client==$CLIENT_GEN_VERSION" >&2
fi

AXE_JS="$TOOLS/node_modules/axe-core/axe.min.js"
VNU_JAR="$TOOLS/node_modules/vnu-jar/build/dist/vnu.jar"
REDOCLY="$TOOLS/node_modules/@redocly/cli/bin/cli.js"
for file in "$AXE_JS" "$VNU_JAR" "$REDOCLY" "$CLIENT_GEN"; do
  [ -s "$file" ] || { echo "test-tools: $file is missing after the install" >&2; exit 1; }
done
java -jar "$VNU_JAR" --version >/dev/null
REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true node "$REDOCLY" --version >/dev/null
"$CLIENT_GEN" --version >/dev/null

echo "export AGRITRACE_AXE_JS=$AXE_JS"
echo "export AGRITRACE_VNU_JAR=$VNU_JAR"
echo "export AGRITRACE_REDOCLY=$REDOCLY"
echo "export AGRITRACE_OPENAPI_CLIENT_GEN=$CLIENT_GEN"
