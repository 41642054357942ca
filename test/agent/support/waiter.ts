/** A python3 program that opens argv[1] and blocks in fcntl(F_SETLKW) for a write lock on all of it; prints its fd first. */
export const WAITER = String.raw`
import os, sys, fcntl, struct
fd = os.open(sys.argv[1], os.O_RDWR)
os.write(1, (str(fd) + '\n').encode())
fcntl.fcntl(fd, fcntl.F_SETLKW, struct.pack('hhqqi4x', fcntl.F_WRLCK, 0, 0, 0, 0))
`;
