/* getaddrinfo(3) as a program built against a C library does it, reading /etc/resolv.conf:
 * prints each address of NAME, one a line; exits 2 with the library's reason when it fails.
 * Built with gcc (glibc) and with musl-gcc -static (musl) by tests/test_host.py.
 *
 *   resolve NAME [4|6]
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    struct addrinfo hints, *found, *p;
    char text[INET6_ADDRSTRLEN];

    if (argc < 2) {
        fprintf(stderr, "usage: %s NAME [4|6]\n", argv[0]);
        return 1;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    if (argc > 2 && strcmp(argv[2], "4") == 0)
        hints.ai_family = AF_INET;
    if (argc > 2 && strcmp(argv[2], "6") == 0)
        hints.ai_family = AF_INET6;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(argv[1], NULL, &hints, &found);
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", argv[1], gai_strerror(rc));
        return 2;
    }
    for (p = found; p != NULL; p = p->ai_next) {
        const void *address = p->ai_family == AF_INET6
            ? (const void *)&((struct sockaddr_in6 *)p->ai_addr)->sin6_addr
            : (const void *)&((struct sockaddr_in *)p->ai_addr)->sin_addr;
        if (inet_ntop(p->ai_family, address, text, sizeof text) != NULL)
            puts(text);
    }
    freeaddrinfo(found);
    return 0;
}
