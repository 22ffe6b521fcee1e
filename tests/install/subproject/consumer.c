/* Uses libtlsmail built as a meson subproject: checks the linked library
 * against the header it was compiled with and creates a context. */
#include <stdio.h>

#include <tlsmail.h>

int main(void)
{
    tm_context *ctx = NULL;
    tm_delivery_status st;
    char json[4096];
    int rc;

    if (tm_version_number() != TM_VERSION_NUMBER || tm_status_size() != sizeof st ||
        tm_policy_size() != sizeof(tm_policy) || tm_message_size() != sizeof(tm_message)) {
        fprintf(stderr, "header and library differ\n");
        return 1;
    }
    rc = tm_context_new(&ctx, NULL); /* system CA store */
    printf("libtlsmail %s (%s): tm_context_new: %s\n", tm_version(), tm_tls_backend(),
           tm_strerror(rc));
    tm_context_free(ctx);
    tm_status_init(&st, TM_STATUS_VERSION);
    if (tm_status_json(&st, NULL, 0, json, sizeof json) <= 0)
        return 1;
    printf("%s\n", json);
    return rc == TM_OK ? 0 : 1;
}
