/*
 * test_settings.c - connection settings end to end against the real peers
 * (tests/peers/peers.py: Postfix listeners as MX hosts, dnsmasq): a sending
 * domain's require_tls, another sending domain unaffected, a message
 * override turning it off (TM_OFF) for one message, a message that sets
 * only skip_verify keeping the domain's require_tls, and a recipient
 * floor that nothing weakens; the status says where each flag came from.
 * The resolution table itself is tests/unit/test_settings.c and
 * test_policy.c; tm-send's flags are tests/tm-send.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "peers.h"

static tm_context *ctx;

static int group_setup(void **state)
{
    (void)state;
    return peers_context_new(&ctx, 5000);
}

static int group_teardown(void **state)
{
    (void)state;
    tm_context_free(ctx);
    return 0;
}

static void arrived(const char *domain, const char *local)
{
    char *got = maildir_wait(domain, local, 1, 10000);
    assert_non_null(got);
    free(got);
}

static void not_arrived(const char *domain, const char *local)
{
    sleep_ms(200);
    assert_int_equal(maildir_count(domain, local), 0);
}

/* Delivers to a fresh local part at domain from `from`. */
static int send_from(const char *from, const char *domain, const tm_policy *p,
                     tm_delivery_status *st, char *local, size_t local_size)
{
    char to_addr[256];
    const char *to[1] = { to_addr };
    tm_message m = TM_MESSAGE_INIT;
    const char *body = "Subject: settings\r\n\r\nsettings\r\n";
    int rc;

    PEERS_STATUS(*st);
    unique_local(local, local_size, "set");
    snprintf(to_addr, sizeof to_addr, "%s@%s", local, domain);
    m.from = from;
    m.to = to;
    m.to_count = 1;
    m.data = body;
    m.size = strlen(body);
    rc = tm_deliver(ctx, &m, p, NULL, st);
    print_message("%s -> %s: rc=%d result=%s mx=%s tls=%d verified=%d require_tls=%d (%s) "
                  "skip_verify=%d (%s) floor=%s\n",
                  from, domain, rc, tm_result_name(st->result), st->mx_host, st->tls,
                  st->cert_verified, st->policy.require_tls,
                  tm_policy_source_name(st->require_tls_source), st->policy.skip_verify,
                  tm_policy_source_name(st->skip_verify_source), tm_floor_name(st->floor));
    return rc;
}

static void settings_end_to_end(void **state)
{
    tm_policy dom = TM_POLICY_INIT, msg = TM_POLICY_INIT;
    tm_delivery_status st;
    char local[64], json[8192];
    (void)state;

    dom.require_tls = TM_ON;
    assert_int_equal(tm_domain_policy_set(ctx, "strict.example", &dom), TM_OK);

    /* The sending domain's require_tls holds: no TLS at mx-plain. */
    assert_int_equal(send_from("a@strict.example", "plain.tm.test", NULL, &st, local, sizeof local),
                     TM_ETLSREQUIRED);
    assert_int_equal(st.policy.require_tls, 1);
    assert_int_equal(st.require_tls_source, TM_SOURCE_SENDING_DOMAIN);
    not_arrived("plain.tm.test", local);

    /* Another sending domain is not affected. */
    assert_int_equal(send_from("a@other.example", "plain.tm.test", NULL, &st, local, sizeof local),
                     TM_OK);
    assert_int_equal(st.require_tls_source, TM_SOURCE_DEFAULT);
    arrived("plain.tm.test", local);

    /* A message override turns it off for one message. */
    msg.require_tls = TM_OFF;
    assert_int_equal(send_from("a@strict.example", "plain.tm.test", &msg, &st, local, sizeof local),
                     TM_OK);
    assert_int_equal(st.policy.require_tls, 0);
    assert_int_equal(st.require_tls_source, TM_SOURCE_MESSAGE);
    arrived("plain.tm.test", local);

    /* A message that sets only skip_verify keeps the domain's require_tls:
     * the self-signed first MX takes it over unverified TLS. */
    assert_int_equal(tm_policy_init(&msg, TM_POLICY_VERSION), TM_OK);
    msg.skip_verify = TM_ON;
    assert_int_equal(send_from("a@strict.example", "badcert.tm.test", &msg, &st, local,
                               sizeof local),
                     TM_OK);
    assert_string_equal(st.mx_host, "mx-selfsigned.tm.test");
    assert_int_equal(st.tls, 1);
    assert_int_equal(st.cert_verified, 0);
    assert_int_equal(st.require_tls_source, TM_SOURCE_SENDING_DOMAIN);
    assert_int_equal(st.skip_verify_source, TM_SOURCE_MESSAGE);
    arrived("badcert.tm.test", local);

    /* A verified floor for the recipient domain: skip_verify cannot weaken
     * it, so the verified second MX takes the message. */
    assert_int_equal(tm_recipient_floor_set(ctx, "BADCERT.tm.test", TM_FLOOR_VERIFIED), TM_OK);
    assert_int_equal(send_from("a@other.example", "badcert.tm.test", &msg, &st, local,
                               sizeof local),
                     TM_OK);
    assert_string_equal(st.mx_host, "mx-valid.tm.test");
    assert_int_equal(st.cert_verified, 1);
    assert_int_equal(st.floor, TM_FLOOR_VERIFIED);
    assert_int_equal(st.policy.skip_verify, 0);
    assert_int_equal(st.skip_verify_source, TM_SOURCE_RECIPIENT_FLOOR);
    assert_int_equal(st.require_tls_source, TM_SOURCE_RECIPIENT_FLOOR);
    assert_true(tm_status_json(&st, NULL, 0, json, sizeof json) < (int)sizeof json);
    assert_non_null(strstr(json, "\"recipient-floor\": \"verified\""));
    arrived("badcert.tm.test", local);

    assert_int_equal(tm_recipient_floor_set(ctx, "badcert.tm.test", TM_FLOOR_NONE), TM_OK);
    assert_int_equal(tm_domain_policy_delete(ctx, "strict.example"), TM_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(settings_end_to_end),
    };
    return cmocka_run_group_tests_name("settings", tests, group_setup, group_teardown);
}
