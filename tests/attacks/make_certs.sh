#!/bin/sh
# Certificates for the attack suite:  make_certs.sh DIR
#
# A throwaway root CA (ca.pem) and intermediate CA, and one leaf per case,
# each as DIR/<name>.pem + DIR/<name>.key (EC P-256, SHA-256):
#   good        localhost, root CA, valid now
#   wrongname   other.atk.test, root CA
#   expired     localhost, root CA, 2020-01-01 .. 2021-01-01
#   notyet      localhost, root CA, 2035-01-01 .. 2036-01-01
#   selfsigned  localhost, self-signed (not from the CA)
#   untrusted   localhost, signed by a second CA the client does not trust
#   chain       localhost, intermediate CA; chain.pem = leaf + intermediate,
#               chainleaf.pem = the leaf alone (chain not sent)
#   wild        *.wild.atk.test          (wildcard as the whole left label)
#   partialwild mx*.atk.test             (partial wildcard: must not match)
#   domain      atk.test                 (the domain, not the MX host)
#   mxhost      mx.atk.test              (the MX host of atk.test)
# Dates are set with "openssl ca" (-startdate/-enddate), which works with
# OpenSSL 1.1 and 3.x.  Nothing here is meant to be committed.
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 DIR" >&2
	exit 64
fi
d=$1
o=${OPENSSL:-openssl}
mkdir -p "$d"
umask 022

cat > "$d/openssl.cnf" <<CNF
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ ca_root ]
dir = $d/root-db
database = \$dir/index.txt
new_certs_dir = \$dir/new
serial = \$dir/serial
certificate = $d/ca.pem
private_key = $d/ca.key
default_md = sha256
policy = any
unique_subject = no
copy_extensions = copy
[ ca_inter ]
dir = $d/inter-db
database = \$dir/index.txt
new_certs_dir = \$dir/new
serial = \$dir/serial
certificate = $d/inter.pem
private_key = $d/inter.key
default_md = sha256
policy = any
unique_subject = no
copy_extensions = copy
[ ca_other ]
dir = $d/other-db
database = \$dir/index.txt
new_certs_dir = \$dir/new
serial = \$dir/serial
certificate = $d/otherca.pem
private_key = $d/otherca.key
default_md = sha256
policy = any
unique_subject = no
copy_extensions = copy
[ any ]
commonName = supplied
[ ca_ext ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[ leaf_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
export OPENSSL_CONF="$d/openssl.cnf"

for db in root-db inter-db other-db; do
	mkdir -p "$d/$db/new"
	: > "$d/$db/index.txt"
	od -An -N8 -tx1 /dev/urandom | tr -d ' \n' | sed 's/^./1/' > "$d/$db/serial"
	echo >> "$d/$db/serial"
done

key() { "$o" ecparam -name prime256v1 -genkey -noout -out "$d/$1.key" 2>/dev/null; }
csr() { # name cn [san]
	if [ -n "${3:-}" ]; then
		"$o" req -new -key "$d/$1.key" -subj "/CN=$2" -addext "subjectAltName=$3" \
			-out "$d/$1.csr" 2>/dev/null
	else
		"$o" req -new -key "$d/$1.key" -subj "/CN=$2" -out "$d/$1.csr" 2>/dev/null
	fi
}
sign() { # ca name ext start end [selfsign]
	if [ -n "${6:-}" ]; then
		"$o" ca -batch -name "$1" -notext -extensions "$3" -startdate "$4" -enddate "$5" \
			-selfsign -keyfile "$d/$2.key" -in "$d/$2.csr" -out "$d/$2.pem" 2>/dev/null
	else
		"$o" ca -batch -name "$1" -notext -extensions "$3" -startdate "$4" -enddate "$5" \
			-in "$d/$2.csr" -out "$d/$2.pem" 2>/dev/null
	fi
}

start=$(date -u -d '-1 day' +%Y%m%d%H%M%SZ)
end=$(date -u -d '+30 days' +%Y%m%d%H%M%SZ)
castart=20200101000000Z
caend=20400101000000Z

key ca; csr ca "attack suite root CA"; sign ca_root ca ca_ext $castart $caend self
key inter; csr inter "attack suite intermediate CA"; sign ca_root inter ca_ext $castart $caend
key otherca; csr otherca "attack suite untrusted CA"; sign ca_other otherca ca_ext $castart $caend self

leaf() { # name cn ca start end
	key "$1"; csr "$1" "$2" "DNS:$2"; sign "$3" "$1" leaf_ext "$4" "$5"
}
leaf good localhost ca_root "$start" "$end"
leaf wrongname other.atk.test ca_root "$start" "$end"
leaf expired localhost ca_root 20200101000000Z 20210101000000Z
leaf notyet localhost ca_root 20350101000000Z 20360101000000Z
leaf untrusted localhost ca_other "$start" "$end"
leaf chainleaf localhost ca_inter "$start" "$end"
leaf wild '*.wild.atk.test' ca_root "$start" "$end"
leaf partialwild 'mx*.atk.test' ca_root "$start" "$end"
leaf domain atk.test ca_root "$start" "$end"
leaf mxhost mx.atk.test ca_root "$start" "$end"

key selfsigned
"$o" req -new -x509 -sha256 -key "$d/selfsigned.key" -subj "/CN=localhost" \
	-addext "subjectAltName=DNS:localhost" -days 30 -out "$d/selfsigned.pem" 2>/dev/null

cat "$d/chainleaf.pem" "$d/inter.pem" > "$d/chain.pem"
cp "$d/chainleaf.key" "$d/chain.key"
rm -f "$d"/*.csr
# sanity: what must verify does, what must not does not
"$o" verify -CAfile "$d/ca.pem" "$d/good.pem" >/dev/null
"$o" verify -CAfile "$d/ca.pem" -untrusted "$d/inter.pem" "$d/chainleaf.pem" >/dev/null
if "$o" verify -CAfile "$d/ca.pem" "$d/chainleaf.pem" >/dev/null 2>&1; then
	echo "$0: chain leaf verifies without its intermediate" >&2
	exit 1
fi
