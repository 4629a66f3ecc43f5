# Cross-compiling for aarch64-linux-gnu with Debian's cross toolchain
# (crossbuild-essential-arm64) against the multiarch -dev packages
# installed beside the host's (scripts/deps.sh cross ARCH; `make cross`):
#   cmake -S . -B build-cross -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64-linux-gnu.cmake -DUPK_PARTS=agent
# The sysroot is / : libraries come from /usr/lib/aarch64-linux-gnu, headers from
# /usr/include and /usr/include/aarch64-linux-gnu. For another sysroot (a Yocto SDK, a
# Buildroot staging dir) use that system's own toolchain file instead.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
# Programs run on the build host; libraries, headers and CMake packages are
# the target's only.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
# pkg-config reads the target's .pc files only (not the host's).
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")
