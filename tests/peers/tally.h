/*
 * tally.h - what a real-peer suite promised Postfix would (not) get, and
 * the check at its end (tests/dane, tests/sts): the mailboxes that must
 * stay empty, the deliveries by how they travelled, and, last, both
 * compared with the maildir and Postfix's log.  Include after cmocka.h and
 * peers.h, in one program only.
 */
#ifndef TM_TESTS_TALLY_H
#define TM_TESTS_TALLY_H

/* Mailboxes that must stay empty, looked at again at the end. */
static struct {
    char domain[128];
    char local[64];
} tally_absent[512];
static int tally_n_absent;
/* SMTP sessions that carried a delivered message, by how it travelled. */
static int tally_tls, tally_plain;

/* local@domain must never receive anything. */
static void tally_note_absent(const char *domain, const char *local)
{
    assert_true(tally_n_absent < (int)(sizeof tally_absent / sizeof tally_absent[0]));
    snprintf(tally_absent[tally_n_absent].domain, sizeof tally_absent[0].domain, "%s", domain);
    snprintf(tally_absent[tally_n_absent].local, sizeof tally_absent[0].local, "%s", local);
    tally_n_absent++;
}

/* One more SMTP session delivered a message, over TLS or not. */
static void tally_note_session(int tls)
{
    if (tls)
        tally_tls++;
    else
        tally_plain++;
}

/*
 * The end of a suite, after a message the peers surely deliver was waited
 * for (Postfix has then worked through what came before it): every mailbox
 * that had to stay empty is looked at again, and the log's sessions since
 * log_start are counted: as many with MAIL in plaintext and over TLS as
 * the deliveries said.
 */
static void tally_check(long log_start, long settle_ms)
{
    sessions all;
    int i;

    sleep_ms(settle_ms);
    for (i = 0; i < tally_n_absent; i++)
        if (maildir_count(tally_absent[i].domain, tally_absent[i].local) != 0) {
            print_error("%s@%s: a message arrived\n", tally_absent[i].local,
                        tally_absent[i].domain);
            fail();
        }
    all = log_sessions(log_start, 0, tally_tls + tally_plain);
    print_message("%d mailboxes empty as they must be; Postfix saw %d sessions, %d with MAIL "
                  "over TLS (%d delivered over TLS), %d in plaintext (%d delivered in "
                  "plaintext)\n",
                  tally_n_absent, all.connects, all.mail_tls, tally_tls, all.mail_plain,
                  tally_plain);
    assert_int_equal(all.mail_plain, tally_plain);
    assert_int_equal(all.mail_tls, tally_tls);
}

#endif
