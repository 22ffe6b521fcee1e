#!/bin/sh
# Create a throwaway CA and a server certificate for the hostile SMTP server:
#   make_test_cert.sh DIR [NAME]
# writes DIR/ca.pem, DIR/ca.key, DIR/leaf.pem, DIR/leaf.key (EC P-256,
# SHA-256), the leaf with subjectAltName DNS:NAME (default mx-hostile.tm.test),
# signed by the CA.  Nothing here is meant to be committed.
set -eu

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: $0 DIR [NAME]" >&2
	exit 64
fi
dir=$1
name=${2:-mx-hostile.tm.test}
days=${TM_CERT_DAYS:-30}
openssl=${OPENSSL:-openssl}

mkdir -p "$dir"
umask 077

"$openssl" ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key" 2>/dev/null
"$openssl" req -x509 -new -sha256 -key "$dir/ca.key" -days "$days" \
	-subj "/CN=libtlsmail hostile test CA" \
	-addext "basicConstraints=critical,CA:TRUE" \
	-addext "keyUsage=critical,keyCertSign,cRLSign" \
	-addext "subjectKeyIdentifier=hash" \
	-out "$dir/ca.pem" 2>/dev/null

"$openssl" ecparam -name prime256v1 -genkey -noout -out "$dir/leaf.key" 2>/dev/null
"$openssl" req -new -sha256 -key "$dir/leaf.key" -subj "/CN=$name" \
	-out "$dir/leaf.csr" 2>/dev/null

ext="$dir/leaf.ext"
cat > "$ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:$name
authorityKeyIdentifier=keyid
subjectKeyIdentifier=hash
EXT
"$openssl" x509 -req -sha256 -in "$dir/leaf.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
	-set_serial "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" \
	-days "$days" -extfile "$ext" -out "$dir/leaf.pem" 2>/dev/null
rm -f "$dir/leaf.csr" "$ext"
chmod 644 "$dir/ca.pem" "$dir/leaf.pem"
"$openssl" verify -CAfile "$dir/ca.pem" "$dir/leaf.pem" >/dev/null
