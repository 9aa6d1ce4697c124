/* Scratch-PostgreSQL helpers shared by the unit tests and benchmarks that
 * start their own cluster (pgtest.h). */
#include "pgtest.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int pgt_free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) < 0) {
        if (s >= 0) close(s);
        return -1;
    }
    close(s);
    return ntohs(a.sin_port);
}

/* key='value' with quotes and backslashes escaped, as libpq parses it. */
static void append_kv(char *buf, size_t cap, const char *key, const char *val)
{
    size_t n = strlen(buf);
    n += (size_t)snprintf(buf + n, cap - n, "%s%s='", n ? " " : "", key);
    for (const char *p = val; *p && n + 3 < cap; p++) {
        if (*p == '\'' || *p == '\\') buf[n++] = '\\';
        buf[n++] = *p;
    }
    snprintf(buf + n, cap - n, "'");
}

char *pgt_conninfo_for(const char *base, const char *dbname)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(base, &errmsg);
    if (!opts) {
        fprintf(stderr, "bad conninfo: %s\n", errmsg ? errmsg : "?");
        PQfreemem(errmsg);
        return NULL;
    }
    char *buf = calloc(1, 4096);
    for (PQconninfoOption *o = opts; buf && o->keyword; o++)
        if (o->val && o->val[0] && strcmp(o->keyword, "dbname") != 0)
            append_kv(buf, 4096, o->keyword, o->val);
    if (buf) append_kv(buf, 4096, "dbname", dbname);
    PQconninfoFree(opts);
    return buf;
}

char *pgt_admin_conninfo(const char *src, const char *template, char *scratch, size_t scratch_len)
{
    const char *env = getenv("SEALROOM_TEST_PG");
    scratch[0] = '\0';
    if (env && env[0]) return strdup(env);
    snprintf(scratch, scratch_len, "%s", template);
    if (!mkdtemp(scratch)) {
        perror("mkdtemp");
        scratch[0] = '\0';
        return NULL;
    }
    /* The cluster runs as postgres when we are root. */
    chmod(scratch, 0755);
    char cmd[2400], line[512] = "";
    snprintf(cmd, sizeof cmd, "sh '%s/tests/pg-scratch.sh' start '%s' %d", src, scratch,
             pgt_free_port());
    FILE *p = popen(cmd, "r");
    bool got = p && fgets(line, sizeof line, p);
    if (!p || pclose(p) != 0 || !got) {
        fprintf(stderr, "tests/pg-scratch.sh start failed\n");
        return NULL;
    }
    line[strcspn(line, "\n")] = '\0';
    return strdup(line);
}

void pgt_quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}
