#!/bin/sh
# gen.sh - how the canned certificates of test_dane.c were made, once.
# They are committed as data; the tests never run this (nor openssl).
# Re-running it makes new keys, so every file changes together; the
# expected TLSA data is computed from the files by the test itself.
#
#   root.pem        RSA-2048 root CA "DANE Test Root", 100 years
#   inter.pem       ECDSA P-256 intermediate CA, issued by root, 100 years
#   leaf.pem        ECDSA P-256 leaf, SAN mx.example.test, issued by inter, 100 years
#   leaf-rsa.pem    RSA-2048 leaf, SAN mx.example.test, issued by inter, 100 years
#   leaf-cn.pem     ECDSA leaf with CN mx.example.test and no SAN, issued by inter
#   wildcard.pem    ECDSA leaf, SAN *.example.test, issued by inter, 100 years
#   expired.pem     ECDSA leaf, SAN mx.example.test, issued by inter, 2000-2001
#   selfsigned.pem  ECDSA self-signed leaf, CN/SAN wrong.invalid, 2000-2001
#   other-ca.pem    ECDSA root CA "Other Test CA", 100 years
#   other-leaf.pem  ECDSA leaf, SAN mx.example.test, issued by other-ca, 100 years
# The keys are deleted at the end: nothing needs them, and re-running
# the script issues everything again.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/ca.cnf" <<CNF
[ca]
default_ca = ca_default
[ca_default]
dir = $tmp
database = $tmp/index.txt
new_certs_dir = $tmp
serial = $tmp/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
[policy_any]
commonName = supplied
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = \$ENV::SAN
[v3_leaf_nosan]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
: >"$tmp/index.txt"
echo 1000 >"$tmp/serial"

long_start=20240101000000Z
long_end=21240101000000Z
old_start=20000101000000Z
old_end=20010101000000Z

ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
rsa() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1.key" 2>/dev/null; }
csr() { openssl req -new -key "$1.key" -subj "/CN=$2" -out "$tmp/$1.csr"; }
# sign NAME ISSUER EXTENSIONS START END
sign() {
    SAN=${SAN:-DNS:unused} openssl ca -batch -notext -config "$tmp/ca.cnf" \
        -extensions "$3" -startdate "$4" -enddate "$5" \
        -cert "$2.pem" -keyfile "$2.key" \
        -in "$tmp/$1.csr" -out "$1.pem" 2>/dev/null
}
selfsign() {
    openssl req -new -key "$1.key" -subj "/CN=$2" -out "$tmp/$1.csr"
    SAN=${SAN:-DNS:unused} openssl ca -batch -notext -config "$tmp/ca.cnf" -selfsign \
        -extensions "$3" -startdate "$4" -enddate "$5" -keyfile "$1.key" \
        -in "$tmp/$1.csr" -out "$1.pem" 2>/dev/null
}

rsa root;     selfsign root "DANE Test Root" v3_ca $long_start $long_end
ec other-ca;  selfsign other-ca "Other Test CA" v3_ca $long_start $long_end
ec inter;     csr inter "DANE Test Intermediate"; sign inter root v3_ca $long_start $long_end

ec leaf;      csr leaf mx.example.test
SAN=DNS:mx.example.test sign leaf inter v3_leaf $long_start $long_end
rsa leaf-rsa; csr leaf-rsa mx.example.test
SAN=DNS:mx.example.test sign leaf-rsa inter v3_leaf $long_start $long_end
ec leaf-cn;   csr leaf-cn mx.example.test
sign leaf-cn inter v3_leaf_nosan $long_start $long_end
ec wildcard;  csr wildcard "*.example.test"
SAN="DNS:*.example.test" sign wildcard inter v3_leaf $long_start $long_end
ec expired;   csr expired mx.example.test
SAN=DNS:mx.example.test sign expired inter v3_leaf $old_start $old_end
ec selfsigned
SAN=DNS:wrong.invalid selfsign selfsigned wrong.invalid v3_leaf $old_start $old_end
ec other-leaf; csr other-leaf mx.example.test
SAN=DNS:mx.example.test sign other-leaf other-ca v3_leaf $long_start $long_end
rm -f ./*.key
