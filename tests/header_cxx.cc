// The public header compiles alone as C++.
#include <tlsmail.h>

int main()
{
    tm_policy p = TM_POLICY_INIT;
    tm_message m = TM_MESSAGE_INIT;
    tm_context_options c = TM_CONTEXT_OPTIONS_INIT;
    tm_session_options s = TM_SESSION_OPTIONS_INIT;
    (void)m;
    (void)c;
    (void)s;
    return p.version == TM_POLICY_VERSION ? 0 : 1;
}
