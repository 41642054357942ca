#!/bin/sh
# Copies the top-level CRDs into the Helm chart (test/charts/chart.test.ts keeps them byte-identical).
set -eu
cd "$(dirname "$0")/.."
cp crds/*.yaml charts/lockmig/crds/
echo "charts/lockmig/crds now matches crds/"
