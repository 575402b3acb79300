// The boot-time floor for `make bench-boot`: an init that powers the VM off at once. Booted
// with the same kernel and QEMU flags as the real image, it measures what the kernel itself
// costs, so the agent's share of boot time can be told apart.
#include <sys/reboot.h>
#include <unistd.h>

int main(void) {
    sync();
    reboot(RB_POWER_OFF);
    return 1;
}
