/*
 * policy.c - the policy truth table of DESIGN.md as one pure function, so
 * that the session code only carries out decisions and the table is tested
 * row by row.
 */
#include <string.h>

#include "internal.h"

tm_tls_action tm__policy_decide(const tm_policy *policy, tm_tls_event event)
{
    int require_tls = policy != NULL && TM_FLAG(policy->require_tls);
    int skip_verify = policy != NULL && TM_FLAG(policy->skip_verify);
    int keep_unverified = policy != NULL && TM_FLAG(policy->keep_unverified_tls);

    switch (event) {
    case TM_EV_CERT_VALID:
        return TM_ACT_USE_TLS;
    case TM_EV_CERT_INVALID:
        if (skip_verify)
            return TM_ACT_USE_TLS;
        if (require_tls)
            return TM_ACT_NEXT_MX;
        /* Postfix "may": encrypted but unverified beats plaintext. */
        if (keep_unverified)
            return TM_ACT_USE_TLS;
        return TM_ACT_PLAIN_NEW;
    case TM_EV_HANDSHAKE:
        /* A failed handshake leaves the connection unusable: a plaintext
         * retry is always a new connection. */
        return require_tls ? TM_ACT_NEXT_MX : TM_ACT_PLAIN_NEW;
    case TM_EV_NOT_OFFERED:
    case TM_EV_REFUSED:
        return require_tls ? TM_ACT_NEXT_MX : TM_ACT_PLAIN_SAME;
    case TM_EV_CLOSING:
        /* 421: the host is leaving, whatever the policy. */
        return TM_ACT_NEXT_MX;
    }
    /* An event outside the enum: the safe choice, whatever the policy. */
    return TM_ACT_NEXT_MX;
}

/* One flag: the most specific level that set it (!= 0) wins. */
static int pick_flag(int message, int domain, int *source)
{
    if (message != 0) {
        *source = TM_SOURCE_MESSAGE;
        return message > 0;
    }
    if (domain != 0) {
        *source = TM_SOURCE_SENDING_DOMAIN;
        return domain > 0;
    }
    *source = TM_SOURCE_DEFAULT;
    return 0;
}

void tm__policy_resolve(const tm_policy *message, const tm_policy *domain, int floor,
                       tm_resolved *out)
{
    static const tm_policy none = TM_POLICY_INIT;

    if (!message)
        message = &none;
    if (!domain)
        domain = &none;
    memset(&out->policy, 0, sizeof out->policy);
    out->policy.version = TM_POLICY_VERSION;
    out->policy.require_tls =
        pick_flag(message->require_tls, domain->require_tls, &out->require_tls_source);
    out->policy.skip_verify =
        pick_flag(message->skip_verify, domain->skip_verify, &out->skip_verify_source);
    out->policy.keep_unverified_tls = pick_flag(
        message->keep_unverified_tls, domain->keep_unverified_tls, &out->keep_unverified_tls_source);
    out->floor = TM_FLOOR_NONE;
    /* A floor is never weakened by a higher level. */
    if (floor == TM_FLOOR_TLS || floor == TM_FLOOR_VERIFIED || floor == TM_FLOOR_DANE) {
        out->floor = floor;
        if (!out->policy.require_tls) {
            out->policy.require_tls = 1;
            out->require_tls_source = TM_SOURCE_RECIPIENT_FLOOR;
        }
    }
    if ((floor == TM_FLOOR_VERIFIED || floor == TM_FLOOR_DANE) && out->policy.skip_verify) {
        out->policy.skip_verify = 0;
        out->skip_verify_source = TM_SOURCE_RECIPIENT_FLOOR;
    }
}
