#!/bin/sh
# Copies the top-level CRDs into the Helm chart, which installs them from templates/crds.yaml so that
# `helm upgrade` updates them too (test/charts/chart.test.ts keeps them byte-identical).
set -eu
cd "$(dirname "$0")/.."
mkdir -p charts/lockmig/files/crds
cp crds/*.yaml charts/lockmig/files/crds/
echo "charts/lockmig/files/crds now matches crds/"
