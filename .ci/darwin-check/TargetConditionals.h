/* A stand-in for the macOS SDK header, so `cargo check --target *-apple-darwin` can build
 * ring's C parts on Linux without the SDK. Nothing is linked: this only lets CI prove that
 * STOQ's Rust code compiles for macOS. */
#ifndef STOQ_TARGET_CONDITIONALS_H
#define STOQ_TARGET_CONDITIONALS_H
#define TARGET_OS_MAC 1
#define TARGET_OS_OSX 1
#define TARGET_OS_IPHONE 0
#define TARGET_OS_IOS 0
#define TARGET_OS_TV 0
#define TARGET_OS_WATCH 0
#define TARGET_OS_SIMULATOR 0
#endif
