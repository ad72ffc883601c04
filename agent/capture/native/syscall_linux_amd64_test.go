package native_test

import "golang.org/x/sys/unix"

// sysPoll is poll(2), which glibc's poll calls here (tcpdump waits in it).
const sysPoll = unix.SYS_POLL
