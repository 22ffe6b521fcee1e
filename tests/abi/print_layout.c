/* print_layout.c - prints tm_abi_layout() of the linked library, for
 * check_layout.py. */
#include <stdio.h>

#include "tlsmail.h"

int main(void)
{
    return fputs(tm_abi_layout(), stdout) < 0 ? 1 : 0;
}
