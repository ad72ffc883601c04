package capture

// RingSectionForTest is ringSection, for the tests of package capture_test.
var RingSectionForTest = ringSection
