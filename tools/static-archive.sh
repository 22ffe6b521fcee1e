#!/bin/sh
# tools/static-archive.sh IN.a OUT.a [LD OBJCOPY AR]
#
# The installed static library: every object of IN.a linked into one
# relocatable object whose hidden symbols (the library's internal tm__*
# functions, built with -fvisibility=hidden) are made local, so that the
# archive exports the public tm_* API and nothing else - as the shared
# library's version script does.
set -eu
in=$1
out=$2
ld=${3:-ld}
objcopy=${4:-objcopy}
ar=${5:-ar}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$ld" -r --whole-archive "$in" -o "$tmp/tlsmail.o"
"$objcopy" --localize-hidden "$tmp/tlsmail.o"
rm -f "$out"
"$ar" rcs "$out" "$tmp/tlsmail.o"
