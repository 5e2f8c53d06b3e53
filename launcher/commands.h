/* Subcommands of the moerun program. Each returns a process exit status
 * (0 ok, 2 user error, 1 internal failure). */
#ifndef MR_COMMANDS_H
#define MR_COMMANDS_H

int mr_cmd_generate(int argc, char **argv);
int mr_cmd_plan(int argc, char **argv);
int mr_cmd_topo(int argc, char **argv);

#endif
