#!/bin/sh
# Install exactly the Debian packages NestQuant needs, and nothing when they are
# all present.  Idempotent; safe to run as the first command on a fresh Debian 12.
#
#   scripts/setup-deps.sh [GROUP...]     GROUP: build test train kmod cross demo bench kmod-backports all
#                                        (default: build test)
#
# Groups keep a build machine from pulling in torch or a kernel image it does not
# need.  `make` asks for "build", `make check` for "build test kmod cross",
# model training for "train".
set -eu

build="make gcc clang llvm pkg-config libc6-dev libbpf-dev bpftool libelf-dev zlib1g-dev
       liburing-dev protobuf-c-compiler libprotobuf-c-dev libonnx-dev libjpeg62-turbo-dev
       libpng-dev"
test="check libsubunit-dev libonnx-testdata dataset-fashion-mnist libclang-rt-14-dev
      gnuplot-nox procps jq"
train="python3 python3-torch python3-torchvision python3-onnx python3-numpy"
kmod="linux-image-amd64 linux-headers-amd64 qemu-system-x86 busybox-static cpio xz-utils zstd"
cross="gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static"
demo="dataset-fashion-mnist gnuplot-nox fonts-dejavu-core python3"	# make demo (scripts/demo.sh)
bench="nodejs npm"	# make bench-infer, only when node/npm are missing (not in "all": nodesource's nodejs conflicts with npm)

[ $# -gt 0 ] || set -- build test
want="" bp=0
for g in "$@"; do
	case $g in
	build) want="$want $build" ;;
	test) want="$want $test" ;;
	train) want="$want $train" ;;
	kmod) want="$want $kmod" ;;
	cross) want="$want $cross" ;;
	bench) want="$want $bench" ;;
	demo) want="$want $demo" ;;
	kmod-backports) want="$want $kmod" bp=1 ;;	# + bookworm-backports' 6.12 kernel
	all) want="$want $build $test $train $kmod $cross" ;;
	*) echo "setup-deps: unknown group '$g' (build test train kmod cross demo bench kmod-backports all)" >&2; exit 2 ;;
	esac
done

[ "$bp" -eq 0 ] || "$(dirname "$0")"/setup-kmod-backports.sh
missing=""
for p in $want; do
	case " $missing " in *" $p "*) continue ;; esac
	s=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$s" = installed ] || missing="$missing $p"
done
[ -n "$missing" ] || exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "setup-deps: missing Debian packages:$missing" >&2
	echo "setup-deps: run as root (or: sudo apt-get install --no-install-recommends$missing)" >&2
	exit 1
fi
echo "setup-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine may never have fetched the package lists.
if ! apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1; then
	apt-get update -q >/dev/null
	apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
