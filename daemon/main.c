/*
 * daemon/main.c — warmpoold: parse the command line, load the config, wire
 * the engine together and run it. Nothing else lives here.
 *
 * Exit codes: 0 clean shutdown (SIGTERM drained, SIGINT) or config OK;
 * 1 configuration error or startup failure; 2 usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "config.h"
#include "engine.h"
#include "log.h"
#include "systemd.h"
#include "upgrade.h"
#include "version.h"

enum { EXIT_CONFIG = 1, EXIT_USAGE = 2 };

static void usage(FILE *out)
{
	fprintf(out,
	        "Usage: warmpoold [-c FILE] [--check-config [--resolve]]\n"
	        "Keep warm, health-checked TCP connections to backends and hand them to local clients.\n"
	        "\n"
	        "  -c, --config FILE   configuration file (default %s)\n"
	        "  -t, --check-config  validate the configuration, print 'FILE: configuration OK' or\n"
	        "                      every error, and exit 0 or 1 without starting anything\n"
	        "      --resolve       with --check-config: also resolve every backend host name\n"
	        "                      (with its dns: settings); one that does not resolve is an error\n"
	        "      --dump-schema   print every configuration key (type, range, default, where it\n"
	        "                      may be written, what a reload does) as JSON and exit\n"
	        "  -V, --version       print the version and exit\n"
	        "  -h, --help          print this help and exit\n"
	        "\n"
	        "Signals: SIGHUP reloads the configuration file (as `warmpoolctl reload` does);\n"
	        "SIGTERM drains active sessions (up to daemon.shutdown_timeout) and exits;\n"
	        "SIGINT closes everything and exits at once; SIGUSR2 upgrades in place (as\n"
	        "`warmpoolctl upgrade` does). See warmpoold(8).\n",
	        CFG_DEFAULT_PATH);
}

/* Sessions need two descriptors each: use all the process may have. */
static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t old = rl.rlim_cur;
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
			log_warning("cannot raise the open-file limit from %llu: %s", (unsigned long long)old,
			            strerror(errno));
			return;
		}
	}
	log_info("open-file limit: %llu", (unsigned long long)rl.rlim_cur);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"check-config", no_argument, NULL, 't'},
	    {"version", no_argument, NULL, 'V'},
	    {"dump-schema", no_argument, NULL, 'S'}, /* long only: 'S' is not in the short list */
	    {"resolve", no_argument, NULL, 'R'},     /* long only, with --check-config */
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *path = CFG_DEFAULT_PATH;
	int check_only = 0, resolve = 0, c;
	upgrade_init(argc, argv); /* before getopt permutes argv: an upgrade runs the same line */
	while ((c = getopt_long(argc, argv, "c:tVh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 't':
			check_only = 1;
			break;
		case 'R':
			resolve = 1;
			break;
		case 'V':
			printf("warmpoold %s\n", WARMPOOL_VERSION);
			return 0;
		case 'S':
			return cfg_dump_schema(stdout) == 0 ? 0 : EXIT_CONFIG;
		case 'h':
			usage(stdout);
			return 0;
		default: /* getopt said what was wrong, in one line */
			fprintf(stderr, "Try 'warmpoold --help' for more information.\n");
			return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "warmpoold: unexpected argument '%s'\nTry 'warmpoold --help' for more information.\n",
		        argv[optind]);
		return EXIT_USAGE;
	}
	if (resolve && !check_only) { /* the daemon never blocks on a name: it resolves in its loop */
		fprintf(stderr, "warmpoold: --resolve goes with --check-config\nTry 'warmpoold --help' for more "
		                "information.\n");
		return EXIT_USAGE;
	}

	struct wp_config *cfg = NULL;
	struct cfg_errors errs = {0};
	if (cfg_load_file(path, &cfg, &errs) < 0) {
		for (size_t i = 0; i < errs.n; i++)
			fprintf(stderr, "%s\n", errs.msg[i]);
		if (errs.truncated)
			fprintf(stderr, "%s: ... and %zu more error%s\n", path, errs.truncated, errs.truncated == 1 ? "" : "s");
		/* One error (a missing file, say) is its own summary. */
		if (errs.n + errs.truncated > 1)
			fprintf(stderr, "warmpoold: %s: configuration is invalid (%zu errors)\n", path, errs.n + errs.truncated);
		cfg_errors_free(&errs);
		return EXIT_CONFIG;
	}
	cfg_errors_free(&errs);
	if (check_only) {
		for (size_t i = 0; i < cfg->warnings.n; i++)
			fprintf(stderr, "%s\n", cfg->warnings.msg[i]);
		if (resolve && cfg_resolve_names(cfg, &errs) < 0) {
			for (size_t i = 0; i < errs.n; i++)
				fprintf(stderr, "%s\n", errs.msg[i]);
			if (errs.truncated)
				fprintf(stderr, "%s: ... and %zu more error%s\n", path, errs.truncated,
				        errs.truncated == 1 ? "" : "s");
			if (errs.n + errs.truncated > 1)
				fprintf(stderr, "warmpoold: %s: %zu host names do not resolve\n", path, errs.n + errs.truncated);
			cfg_errors_free(&errs);
			cfg_free(cfg);
			return EXIT_CONFIG;
		}
		printf("%s: configuration OK\n", path);
		cfg_free(cfg);
		return 0;
	}

	log_init(cfg->daemon.log_level);
	/* A client or backend hanging up mid-write must be an EPIPE, not a death. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		log_warning("cannot ignore SIGPIPE: %s", strerror(errno));
	log_info("warmpoold %s starting: %zu pool%s from %s", WARMPOOL_VERSION, cfg->n_pools, cfg->n_pools == 1 ? "" : "s",
	         path);
	for (size_t i = 0; i < cfg->warnings.n; i++)
		log_warning("%s", cfg->warnings.msg[i]);
	raise_nofile();

	int rc = EXIT_CONFIG;
	char err[512];
	if (systemd_notify_open() < 0) { /* logged */
		cfg_free(cfg);
		return rc;
	}
	struct engine *eng = engine_create(cfg);
	if (!eng) {
		log_error("out of memory creating the engine");
	} else if (engine_listen(eng, err, sizeof err) < 0) {
		log_error("cannot listen: %s", err);
	} else {
		rc = engine_run(eng);
		log_info("exiting");
	}
	engine_destroy(eng); /* frees cfg */
	systemd_notify_close(); /* when there was no engine to do it */
	return rc;
}
