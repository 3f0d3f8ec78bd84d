#!/usr/bin/env bash
# Installs the page checkers of the public page tests (tests/traceapi/test_pages_*.py): axe-core
# (accessibility rules, injected into Chromium) and the Nu Html Checker (vnu.jar, HTML validity;
# its 26.x releases need Java >= 17, Debian 12's default-jre-headless). Both come from npm at
# pinned versions into build/tools (gitignored); a JRE and nodejs/npm are installed from Debian
# only when missing (as root). Prints the environment variables that point the tests at the
# checkers. Safe to run twice: nothing is fetched when the pinned versions are in place.
set -euo pipefail
cd "$(dirname "$0")/.."

AXE_VERSION=4.14.1
VNU_VERSION=26.9.27
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

installed() {  # installed PACKAGE VERSION: true when node_modules holds exactly that version
  local manifest="$TOOLS/node_modules/$1/package.json"
  [ -f "$manifest" ] \
    && [ "$(node -p "require(process.argv[1]).version" "$manifest")" = "$2" ]
}

if ! installed axe-core "$AXE_VERSION" || ! installed vnu-jar "$VNU_VERSION"; then
  mkdir -p "$TOOLS"
  npm install --prefix "$TOOLS" --save-exact --no-audit --no-fund --loglevel=error \
    "axe-core@$AXE_VERSION" "vnu-jar@$VNU_VERSION" >&2
fi

AXE_JS="$TOOLS/node_modules/axe-core/axe.min.js"
VNU_JAR="$TOOLS/node_modules/vnu-jar/build/dist/vnu.jar"
for file in "$AXE_JS" "$VNU_JAR"; do
  [ -s "$file" ] || { echo "test-tools: $file is missing after the install" >&2; exit 1; }
done
java -jar "$VNU_JAR" --version >/dev/null

echo "export AGRITRACE_AXE_JS=$AXE_JS"
echo "export AGRITRACE_VNU_JAR=$VNU_JAR"
