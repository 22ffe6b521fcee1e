/*
 * The message side of tm-send's sendmail mode: reading the message, the
 * recipients of its To/Cc/Bcc headers (-t), the copy that is sent (Bcc
 * removed, a From added when there is none).  No I/O but sm_read_all, no
 * SMTP.  Addresses returned are heap strings owned by the sm_list.
 */
#ifndef TM_SENDMAIL_H
#define TM_SENDMAIL_H

#include <stddef.h>

typedef struct {
    char **v;
    size_t n, cap;
} sm_list;

/* Reads fd to EOF into a heap buffer (*buf, NUL-terminated, *len without
 * the NUL).  0, or -1 with errno. */
int sm_read_all(int fd, char **buf, size_t *len);

/* Writes all n bytes of p to fd (again after EINTR or a short write).  0,
 * or -1 with errno. */
int sm_write_all(int fd, const char *p, size_t n);

/* Appends a copy of addr unless the list has it already (the local part
 * compared exactly, the domain without regard to case).  0, or -1 (out of
 * memory). */
int sm_list_add(sm_list *l, const char *addr);
void sm_list_free(sm_list *l);

/* Parses an RFC 5322 address list (one header's unfolded or folded value):
 * comma-separated, "Name <addr>", "addr (comment)", quoted strings, group
 * syntax "Group: a@x, b@y;", source routes dropped.  Appends the addresses
 * to l.  0, or -1 (out of memory). */
int sm_parse_addresses(const char *value, size_t len, sm_list *l);

/*
 * The header section, for the three functions below: the fields from the
 * start of the message (after a leading mbox "From " line, which is
 * dropped) to an empty line or a line that is no field.  Lines end with
 * CRLF, LF or a bare CR, as the library's content encoder ends them; a
 * field name may be followed by white space before its colon (obsolete
 * syntax, "Bcc :").
 */

/* The addresses of every To, Cc and Bcc header of the message's header
 * section.  0, or -1 (out of memory). */
int sm_header_recipients(const char *msg, size_t len, sm_list *l);

/* Whether the header section has a field called name (case-insensitive). */
int sm_has_header(const char *msg, size_t len, const char *name);

/* The copy that is sent: the message without its Bcc fields (continuation
 * lines included) and without a leading "From " line, with "From:
 * from_line" (CRLF) in front when from_line is not NULL, the line ends of
 * the fields made CRLF, and an empty line (CRLF) put in when the header
 * section ends at a line that is not empty, so that every receiver takes
 * what follows as the body.  Heap buffer in *out (*out_len), or -1 (out of
 * memory). */
int sm_message_copy(const char *msg, size_t len, const char *from_line, char **out,
                    size_t *out_len);

#endif
