#!/usr/bin/env bash
# One command from a fresh clone to a booted guest: installs what is missing, builds vmm and the
# guest images (both cached), and boots the guest with its console on this terminal.
# Extra arguments go to `vmm run` (e.g. --kernel guest-images/out/bzImage to boot the bzImage).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/setup.sh
images=$(guest-images/build.sh | tail -n1)
dotnet build src/Vmm.Cli -c Release -v quiet -nologo >&2

echo "demo: booting $images/vmlinux with $images/initramfs.cpio (Ctrl-A x quits)" >&2
set +e
dotnet src/Vmm.Cli/bin/Release/net10.0/vmm.dll run \
    --kernel "$images/vmlinux" --initrd "$images/initramfs.cpio" --memory 256M "$@"
rc=$?
set -e
case $rc in
    33) echo "demo: the guest's init reported success through the exit port (exit code 33)" >&2; exit 0 ;;
    0)  echo "demo: the guest reset (or Ctrl-A x quit) before its init reported success: see its console above" >&2; exit 1 ;;
    *)  echo "demo: vmm exited with $rc (see 'vmm run --help' for the exit codes)" >&2; exit "$rc" ;;
esac
