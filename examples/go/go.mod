module tlsmail-examples

go 1.19

require tlsmail v0.0.0

replace tlsmail => ../../bindings/go/tlsmail
