module tlsmail

go 1.19
