/*
 * ENTRYPOINT of the nonewprivs image, installed setuid root and run as uid 1000: the effective
 * uid it prints is 0 unless no_new_privs kept the setuid bit from taking effect.
 */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	printf("Effective uid: %d\n", (int)geteuid());
	return 0;
}
