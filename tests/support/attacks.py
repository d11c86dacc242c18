"""The attack library the sandbox tests build: a shared object whose
constructor records, for every process that loads it, the process's name,
real uid and effective capabilities, in HOST_RECORD if it can open it, else
in /job/record."""

RECORDER_C = r"""
#include <stdio.h>
#include <string.h>
#ifndef HOST_RECORD
#define HOST_RECORD "/job/record"
#endif
__attribute__((constructor)) static void rgrid_record(void) {
    char line[256], name[64] = "?", uid[64] = "?", cap[64] = "?";
    FILE *st = fopen("/proc/self/status", "r");
    if (st) {
        while (fgets(line, sizeof line, st)) {
            if (!strncmp(line, "Name:", 5)) sscanf(line + 5, "%63s", name);
            if (!strncmp(line, "Uid:", 4)) sscanf(line + 4, "%63s", uid);
            if (!strncmp(line, "CapEff:", 7)) sscanf(line + 7, "%63s", cap);
        }
        fclose(st);
    }
    FILE *out = fopen(HOST_RECORD, "a");
    if (!out) out = fopen("/job/record", "a");
    if (out) { fprintf(out, "%s %s %s\n", name, uid, cap); fclose(out); }
}
"""
