module tlsmail.bench/sink

go 1.19
