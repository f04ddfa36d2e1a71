/* The smallest fast TCP relay we know how to write: the ceiling for any userspace proxy.
 *
 *     splice_relay LISTEN_IP LISTEN_PORT BACKEND_IP BACKEND_PORT
 *
 * Built and run by benchmarks/proxy_userspace.py beside kmesh's userspace
 * proxy, so both are measured in the same run. One thread per direction per
 * connection, each moving bytes socket -> pipe -> socket with blocking
 * splice(2): no event loop, no copies through userspace, nothing to do
 * between calls. A proxy that terminates TCP cannot do less work per byte.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK (1 << 20)

struct way { int src, dst; };

static struct sockaddr_in backend;

static void *pump(void *arg) {
    struct way *w = arg;
    int p[2];
    if (pipe(p) != 0) return NULL;
    fcntl(p[1], F_SETPIPE_SZ, CHUNK);
    for (;;) {
        ssize_t n = splice(w->src, NULL, p[1], NULL, CHUNK, SPLICE_F_MOVE);
        if (n <= 0) break;
        while (n > 0) {
            ssize_t m = splice(p[0], NULL, w->dst, NULL, (size_t)n, SPLICE_F_MOVE);
            if (m <= 0) goto done;
            n -= m;
        }
    }
done:
    shutdown(w->dst, SHUT_WR);
    close(p[0]);
    close(p[1]);
    return NULL;
}

static void *serve(void *arg) {
    int client = (int)(long)arg;
    int up = socket(AF_INET, SOCK_STREAM, 0);
    if (up >= 0 && connect(up, (struct sockaddr *)&backend, sizeof backend) == 0) {
        struct way in = {client, up}, out = {up, client};
        pthread_t t;
        if (pthread_create(&t, NULL, pump, &out) == 0) {
            pump(&in);
            pthread_join(t, NULL);
        }
    }
    if (up >= 0) close(up);
    close(client);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s LISTEN_IP LISTEN_PORT BACKEND_IP BACKEND_PORT\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    backend.sin_family = AF_INET;
    backend.sin_port = htons((unsigned short)atoi(argv[4]));
    if (inet_pton(AF_INET, argv[1], &me.sin_addr) != 1 || inet_pton(AF_INET, argv[3], &backend.sin_addr) != 1) {
        fprintf(stderr, "bad address %s or %s\n", argv[1], argv[3]);
        return 2;
    }
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&me, sizeof me) != 0 || listen(l, 128) != 0) {
        perror("listen");
        return 1;
    }
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0) continue;
        pthread_t t;
        if (pthread_create(&t, NULL, serve, (void *)(long)c) == 0)
            pthread_detach(t);
        else
            close(c);
    }
}
