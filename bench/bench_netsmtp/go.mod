module tlsmail.bench/netsmtp

go 1.19
